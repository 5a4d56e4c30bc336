#!/usr/bin/env bash
# The demo, from a fresh clone: set-up (npm ci, build, Debian packages), then the demo shop:
# `skein up` runs the control plane, the proxy and the shop's services until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh
bash scripts/setup.sh
exec node bin/skein.js up examples/shop/shop.yaml "$@"
