#!/usr/bin/env bash
# Installs what Skein's tests and demo need on a fresh Debian machine: Debian packages (when
# missing, via apt-get) and the npm dependencies, then builds. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh

need=()
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ] || need+=(bind9)
command -v dnsperf >/dev/null 2>&1 || need+=(dnsperf)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v strace >/dev/null 2>&1 || need+=(strace)
# The dashboard test drives Debian's Chromium; the Prometheus test runs a real Prometheus.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# The etcd store's tests run a real 3-member etcd cluster (etcdctl comes with etcd-client).
command -v etcd >/dev/null 2>&1 || need+=(etcd-server etcd-client)
# The HTTP/2 tests and benchmarks drive h2load (and curl --http2-prior-knowledge).
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
if [ "${SKEIN_SKIP_APT:-}" != "1" ] && [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 24 ]; then
  echo "setup: Node $(node --version) is first on PATH; Skein needs 24 or newer (npm ci installs it in node_modules/.bin)" >&2
  exit 1
fi
echo "setup: Node $(node --version)"
echo "setup: build"
npx tsc -p tsconfig.json
echo "setup: dashboard (vite)"
npx vite build dashboard --logLevel warn
