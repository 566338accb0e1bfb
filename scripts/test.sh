#!/usr/bin/env bash
# keel's test suite: installs the real Ethereum peers the tests drive (anvil and cast, from
# npm, pinned in package-lock.json), then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p keel-mempool`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/cast ] || [ ! -x node_modules/.bin/anvil ]; then
  npm ci --no-audit --no-fund
fi
cargo test --workspace --locked "$@"
