#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time each (default 60 s): `scripts/fuzz.sh [seconds]`.
# Builds with -O (optimised; keel's assertions stay on). Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). New corpus
# entries land in fuzz/corpus/<target>/; a crash lands in fuzz/artifacts/<target>/ and fails
# the run: copy it to fuzz/regressions/<target>/ so the test suite replays it for good.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
for target in raw_transaction json_rpc json_rpc_server raft_message batch_data forced_payload blob \
  state_image peer_answer peer_json admin_body forward_reply; do
  mkdir -p "corpus/$target" "../fuzz/regressions/$target"
  echo "== $target for ${seconds}s"
  dict=()
  if [ -f "$target.dict" ]; then dict=(-dict="$target.dict"); fi
  cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
    -max_total_time="$seconds" -max_len=131072 -timeout=10 -rss_limit_mb=4096 "${dict[@]}"
done
