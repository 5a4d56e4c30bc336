#!/usr/bin/env bash
# The proxy comparison in one command: the same backend reached directly, through `skein proxy`,
# through HAProxy and through nginx, measured side by side with wrk and hey (bench/proxy.ts).
#
#   bash scripts/bench-proxy.sh [--quick] [--duration 10s] [--rounds 1] [--json results.json] ...
#
# Installs what is missing of haproxy, nginx, wrk, hey and util-linux's taskset
# via apt-get (skipped when SKEIN_SKIP_APT=1), runs scripts/setup.sh (npm ci when needed, build),
# then `node dist/bench/proxy.js` with the arguments given here.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh

need=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v hey >/dev/null 2>&1 || need+=(hey)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
if [ "${SKEIN_SKIP_APT:-}" != "1" ] && [ ${#need[@]} -gt 0 ]; then
  echo "bench-proxy: installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # The packages' own services (nginx on :80, haproxy) are not wanted: the benchmark starts its
  # own instances. Where no policy-rc.d exists, one that forbids starting services is put in place
  # for the install only.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  cleanup_policy() { if [ -n "$policy_added" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup_policy EXIT
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  cleanup_policy
  policy_added=""
fi

bash scripts/setup.sh
exec node dist/bench/proxy.js "$@"
