#!/usr/bin/env bash
# Latency of forwarded sends while the embedded store writes transitions.
#
#   scripts/bench-store.sh [held]          (default 5,000 numbers held)
#
# One gateway on the embedded store with one worker thread (the
# single-replica setup) holds `held` numbers through the admin API; every
# transition rewrites the store's file, which is O(held). Then hey sends a
# closed number's sends at a fixed 1,000 req/s (10 connections) for 8 s,
# twice: once with nothing else going on, once while 300 more numbers are
# tripped through the admin API. It prints p50, p99 and the slowest send of
# both runs and the ratio of the p99s: the cost a burst of transitions (a
# campaign hitting 131056 for many recipients, say) puts on the sends that
# keep flowing. A ratio near 1 means the store's writes stay off the
# serving thread.
#
# All traffic goes to 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

held=${1:-5000}
case $held in '' | *[!0-9]*)
  echo "held must be a whole number, not $held" >&2
  exit 2
  ;;
esac

for tool in hey curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing hey and curl from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey curl >/dev/null
    break
  fi
done

bin=$(wagate_release_bin)
echo "wagate: $bin ($(tree_version))"

scratch
start_sim

proxy_port=$(free_port)
admin_port=$(free_port)
token=bench-admin-token
WAGATE_LISTEN__PROXY="127.0.0.1:$proxy_port" \
WAGATE_LISTEN__ADMIN="127.0.0.1:$admin_port" \
WAGATE_UPSTREAM__BASE_URL="http://127.0.0.1:$sim_port" \
WAGATE_SERVER__WORKER_THREADS=1 \
WAGATE_LOG__LEVEL=warn \
WAGATE_ADMIN__TOKEN="$token" \
WAGATE_STORE__PATH="$work/breakers.json" \
  "$bin" serve --config /dev/null 2>"$work/wagate.log" &
gateway=$!
pids+=($gateway)
wait_port "$admin_port" "$gateway"

send_body >"$work/body.json"

trip() { # first count: trips numbers first..first+count-1, one after another
  local took
  took=$(trip_numbers "$admin_port" "$token" "bench-store: a transition to write" "$1-$(($1 + $2 - 1))")
  echo "$2 transitions written in $took s" >&2
}

latency() { # -> "p50_ms p99_ms slowest_ms"; every answer must be a 200
  local out
  out=$(timeout 60 hey -z 8s -t 5 -c 10 -q 100 -m POST -T application/json -D "$work/body.json" \
    "http://127.0.0.1:$proxy_port/v21.0/200000000000001/messages")
  awk '
    $1 == "Slowest:" {slowest = $2 * 1000}
    $1 == "50%" && $2 == "in" {p50 = $3 * 1000}
    $1 == "99%" && $2 == "in" {p99 = $3 * 1000}
    /^ *\[[0-9]+\]/ && $1 != "[200]" {bad += $2}
    /^Error distribution/ {errors = 1}
    END {
      if (p99 == "") {print "no latency in hey output" > "/dev/stderr"; exit 1}
      if (bad || errors) print "hey saw non-200 answers or errors" > "/dev/stderr"
      printf "%.2f %.2f %.2f", p50, p99, slowest
    }' <<<"$out"
}

echo "holding $held numbers on the embedded store..."
trip 300000000000000 "$held"
read -r quiet_p50 quiet_p99 quiet_max <<<"$(latency)"
trip 400000000000000 300 &
tripper=$!
pids+=($tripper)
read -r busy_p50 busy_p99 busy_max <<<"$(latency)"
wait "$tripper"

printf '%-40s %8s %8s %8s\n' "sends at 1,000 req/s, ms" p50 p99 slowest
printf '%-40s %8.2f %8.2f %8.2f\n' "quiet" "$quiet_p50" "$quiet_p99" "$quiet_max" \
  "while 300 transitions are written" "$busy_p50" "$busy_p99" "$busy_max"
python3 -c "print(f'p99 while writing / p99 quiet: {$busy_p99 / $quiet_p99:.2f}')"
