#!/usr/bin/env bash
# Runs every test. Installs what the tests need first, from Debian when
# they are missing: redis-server and redis-cli (the tests spawn their own
# servers on free ports; the Cluster tests need redis-cli --cluster), and
# chromium with chromium-driver (the status page test drives a headless
# browser).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's redis package starts a service on 6379; the tests never use it.
fi

cargo test --locked "$@"
