# Sourced by the other scripts: puts the Node.js that `npm ci` installs first on PATH (the `node`
# package from the npm registry, Node 24), so that the build, the tests, the demo and the
# benchmarks run on a supported Node whatever the machine has (Debian's is 20, past its end of
# life). SKEIN_NODE_DIR names a directory whose `node` goes first instead (scripts/test-node26.sh).
export PATH="$PWD/node_modules/.bin:$PATH"
if [ -n "${SKEIN_NODE_DIR:-}" ]; then export PATH="$SKEIN_NODE_DIR:$PATH"; fi
