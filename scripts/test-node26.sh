#!/usr/bin/env bash
# The whole test suite on Node 26 (the newest release line; CI runs it on Node 24, the minimum):
# installs the `node` package at 26 into .node26/ once, then runs scripts/test.sh with it first
# on PATH. Arguments go to the test runner, as with scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.node26
if [ ! -x "$dir/node_modules/.bin/node" ]; then
  echo "test-node26: installing node@26 into $dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error node@26
fi
SKEIN_NODE_DIR="$PWD/$dir/node_modules/.bin" exec bash scripts/test.sh "$@"
