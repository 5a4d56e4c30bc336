#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, lint, typecheck (by the build), unit and
# integration tests. This is what `.ci/run` calls.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh
bash scripts/setup.sh
echo "test: lint"
npx eslint .
echo "test: unit and integration tests"
node scripts/run-tests.js all "$@"
