#!/usr/bin/env bash
# keel's test suite: installs the real Ethereum peers and clients the tests drive (anvil, cast,
# viem and playwright-core from npm, pinned in package-lock.json; web3.py from PyPI into .venv,
# pinned in bin/keel/tests/clients/requirements.txt; promtool, systemd-analyze and Chromium from
# Debian), then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p keel-mempool`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/cast ] || [ ! -x node_modules/.bin/anvil ] || [ ! -d node_modules/viem ] \
  || [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund
fi
requirements=bin/keel/tests/clients/requirements.txt
if ! cmp -s "$requirements" .venv/requirements.txt 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" .venv/requirements.txt
fi
# promtool (Debian's prometheus package) checks the alert rules and runs their unit tests;
# systemd-analyze (systemd) checks the example unit; Chromium runs the dashboard's browser test.
if ! command -v promtool > /dev/null || ! command -v systemd-analyze > /dev/null \
  || ! command -v chromium > /dev/null; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus systemd chromium > /dev/null \
    || { $sudo apt-get update > /dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus systemd chromium > /dev/null; }
fi
cargo test --workspace --locked "$@"
