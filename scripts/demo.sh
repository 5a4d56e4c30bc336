#!/usr/bin/env bash
# The demo, from a fresh clone: set-up (npm ci, build, dig), then the registry demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node examples/demo/demo.mjs
