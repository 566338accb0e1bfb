#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: keel and anvil (the peer), same machine, same session, same
# pre-signed workload; then the ECDSA recovery ceiling and the state root cost.
#   scripts/bench.sh [transactions] [senders]
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSACTIONS=${1:-50000}
SENDERS=${2:-500}
GAS_LIMIT=1000000000
[ -x node_modules/.bin/anvil ] || npm ci --no-audit --no-fund
cargo build --release --locked -p keel
KEEL=target/release/keel
WORK=$(mktemp -d)
cleanup() { kill "${KEEL_PID:-}" "${ANVIL_PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "## machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "keel $(git rev-parse --short HEAD), $(node_modules/.bin/anvil --version | head -1)"

echo "## keel: single node, 1 s blocks, gas limit $GAS_LIMIT"
$KEEL node --dev --datadir "$WORK/keel" --rpc-addr 127.0.0.1:18545 --no-metrics \
  --block-time-ms 1000 --gas-limit $GAS_LIMIT 2> "$WORK/keel.log" &
KEEL_PID=$!
sleep 2
$KEEL bench rpc --rpc http://127.0.0.1:18545 --label keel --transactions "$TRANSACTIONS" --senders "$SENDERS"
echo "keel resident memory after the run: $(ps -o rss= -p $KEEL_PID | awk '{printf "%.0f MiB", $1/1024}')"
kill $KEEL_PID; wait $KEEL_PID 2>/dev/null || true; KEEL_PID=

echo "## anvil: 1 s blocks, gas limit $GAS_LIMIT"
# The native binary: node_modules/.bin/anvil is a node script, and killing it would leave
# anvil itself running.
ANVIL=$(ls node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null | head -1)
"${ANVIL:-node_modules/.bin/anvil}" --port 18546 --block-time 1 --gas-limit $GAS_LIMIT --silent &
ANVIL_PID=$!
sleep 2
$KEEL bench rpc --rpc http://127.0.0.1:18546 --label anvil --transactions "$TRANSACTIONS" --senders "$SENDERS"
kill $ANVIL_PID; wait $ANVIL_PID 2>/dev/null || true; ANVIL_PID=

echo "## ECDSA recovery ceiling"
$KEEL bench recover
echo "## state root cost"
$KEEL bench state-root --accounts 10000
$KEEL bench state-root --accounts 1000000 --blocks 3

echo "## cluster: failover and graceful transfer, 250 ms blocks"
$KEEL bench failover --transfers --kills 20 --block-time-ms 250 --election-timeout-ms 250 --heartbeat-ms 50
$KEEL bench failover --kills 20 --block-time-ms 250 --election-timeout-ms 250 --heartbeat-ms 50
$KEEL bench failover --kills 20 --block-time-ms 250

echo "## cluster throughput: three nodes, 1 s blocks, against a single node"
head -c 24 /dev/urandom | base64 > "$WORK/secret"
{
  echo 'secret_file = "secret"'
  for i in 1 2 3; do
    printf '[[members]]\nid = %s\nraft_addr = "127.0.0.1:1710%s"\nrpc_addr = "127.0.0.1:1860%s"\n' $i $i $i
  done
} > "$WORK/cluster.toml"
CLUSTER_PIDS=()
for i in 1 2 3; do
  $KEEL node --dev --cluster "$WORK/cluster.toml" --node-id $i --datadir "$WORK/n$i" \
    --metrics-addr 127.0.0.1:1960$i --block-time-ms 1000 --gas-limit $GAS_LIMIT 2> "$WORK/n$i.log" &
  CLUSTER_PIDS+=($!)
done
sleep 4
LEADER=$(for i in 1 2 3; do curl -s 127.0.0.1:1960$i/cluster | grep -q '"role":"leader"' && echo $i; done)
FOLLOWER=$(( LEADER % 3 + 1 ))
for run in 1 2 3; do
  $KEEL bench rpc --rpc http://127.0.0.1:1860$LEADER --label "3-node cluster, via the leader" --transactions "$TRANSACTIONS" --senders "$SENDERS" | tail -1
  $KEEL bench rpc --rpc http://127.0.0.1:1860$FOLLOWER --label "3-node cluster, via a follower" --transactions "$TRANSACTIONS" --senders "$SENDERS" | tail -1
done
kill "${CLUSTER_PIDS[@]}"; wait "${CLUSTER_PIDS[@]}" 2>/dev/null || true
$KEEL node --dev --datadir "$WORK/single" --rpc-addr 127.0.0.1:18545 --no-metrics \
  --block-time-ms 1000 --gas-limit $GAS_LIMIT 2> "$WORK/single.log" &
KEEL_PID=$!
sleep 2
for run in 1 2 3; do
  $KEEL bench rpc --rpc http://127.0.0.1:18545 --label "keel single node" --transactions "$TRANSACTIONS" --senders "$SENDERS" | tail -1
done
