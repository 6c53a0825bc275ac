#!/usr/bin/env bash
# Runs every test. Installs what the tests need first, from Debian when it
# is missing: redis-server and redis-cli (the tests spawn their own servers
# on free ports; the Cluster tests need redis-cli --cluster), redis-sentinel
# and openssl (the Sentinel failover and TLS tests), chromium with
# chromium-driver (the status page test drives a headless browser), and
# prometheus (tests/prometheus.rs runs the dashboard's and the alerts'
# queries on a Prometheus it spawns).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's packages start services (Redis on 6379, Prometheus on 9090)
  # where an init system runs; the tests never use them.
fi

cargo test --locked "$@"
