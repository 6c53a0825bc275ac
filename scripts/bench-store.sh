#!/usr/bin/env bash
# The breaker store at scale: what a transition costs, what the gateway
# holds in memory, and what resyncs and bursts of trips cost the sends that
# keep flowing, with 100 to 100,000 numbers held.
#
#   scripts/bench-store.sh [embedded|redis|both] [sizes...]
#                                   (default: both, 100 10000 100000)
#
# For each store and size, one fresh gateway with one worker thread (the
# single-replica setup) in front of the simulator:
#   1. holds `size` numbers, tripped through the admin API by 16 clients;
#   2. times 200 more trips one after another (median, p99);
#   3. waits for the periodic resync (every 30 s) and reads the RSS;
#   4. sends a closed number's sends at 1,000 req/s (hey, 10 connections):
#      (a) 8 s with nothing else going on,
#      (b) 32 s, across at least one full resync,
#      (c) 8 s while 1,000 more numbers are tripped at once (64 clients);
#      and prints p99 and the slowest send of each.
# It ends with the ratio of the transition median at the largest size to
# the smallest (target within 2x), and the RSS at the largest (target under
# 64 MiB). Redis runs as a redis-server this script starts on a free port.
#
# All traffic goes to 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

stores=${1:-both}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 10000 100000)
case $stores in
embedded | redis) ;;
both) stores="embedded redis" ;;
*)
  echo "the store is embedded, redis or both, not $stores" >&2
  exit 2
  ;;
esac
for size in "${sizes[@]}"; do
  case $size in '' | *[!0-9]*)
    echo "a size is a whole number, not $size" >&2
    exit 2
    ;;
  esac
done

install_missing hey:hey curl:curl redis-server:redis-server

bin=$(wagate_release_bin)
echo "wagate: $bin ($(tree_version))"

scratch
start_sim
send_body >"$work/body.json"
token=bench-admin-token

percentiles() { # file -> "median p99"
  python3 -c '
import statistics, sys
xs = sorted(float(l) for l in open(sys.argv[1]) if l.strip())
print(f"{statistics.median(xs):.2f} {xs[min(len(xs) - 1, int(len(xs) * 0.99))]:.2f}")' "$1"
}

latency() { # seconds -> "p99_ms slowest_ms" of a closed number at 1,000 req/s
  hey_p99 "$1" "http://127.0.0.1:$proxy_port/v21.0/200000000000001/messages"
}

resyncs() {
  curl -fsS "http://127.0.0.1:$admin_port/metrics" | awk '$1 == "wagate_store_resyncs_total" {print $2}'
}

rss_mib() {
  awk '$1 == "VmRSS:" {printf "%.1f", $2 / 1024}' "/proc/$gateway/status"
}

# Waits (up to 40 s) for the resync counter to pass $1.
wait_resync() {
  for _ in $(seq 1 400); do
    [ "$(resyncs)" -gt "$1" ] && return 0
    sleep 0.1
  done
  echo "no resync within 40 s" >&2
  exit 1
}

results=()
for store in $stores; do
  for size in "${sizes[@]}"; do
    proxy_port=$(free_port)
    admin_port=$(free_port)
    store_env=(WAGATE_STORE__PATH="$work/$store-$size.db")
    if [ "$store" = redis ]; then
      redis_port=$(free_port)
      redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$work" >"$work/redis-$size.log" 2>&1 &
      redis_pid=$!
      pids+=($redis_pid)
      wait_port "$redis_port" "$redis_pid"
      store_env+=(WAGATE_STORE__REDIS_URL="redis://127.0.0.1:$redis_port")
    fi
    env WAGATE_LISTEN__PROXY="127.0.0.1:$proxy_port" \
      WAGATE_LISTEN__ADMIN="127.0.0.1:$admin_port" \
      WAGATE_UPSTREAM__BASE_URL="http://127.0.0.1:$sim_port" \
      WAGATE_SERVER__WORKER_THREADS=1 \
      WAGATE_LOG__LEVEL=warn \
      WAGATE_ADMIN__TOKEN="$token" \
      "${store_env[@]}" \
      "$bin" serve --config /dev/null 2>"$work/wagate-$store-$size.log" &
    gateway=$!
    pids+=($gateway)
    wait_port "$admin_port" "$gateway"

    held=$(trip_numbers "$admin_port" "$token" bench-store -c16 "300000000000000-$((300000000000000 + size - 1))")
    trip_numbers "$admin_port" "$token" bench-store "-t$work/timings" 310000000000000-310000000000199 >/dev/null
    read -r t50 t99 <<<"$(percentiles "$work/timings")"
    before=$(resyncs)
    wait_resync "$before"
    rss=$(rss_mib)
    read -r quiet99 quietmax <<<"$(latency 8)"
    before=$(resyncs)
    read -r sync99 syncmax <<<"$(latency 32)"
    [ "$(resyncs)" -gt "$before" ] || echo "warning: no resync during the 32 s run" >&2
    trip_numbers "$admin_port" "$token" bench-store -c64 320000000000000-320000000000999 >"$work/burst" &
    burst=$!
    read -r burst99 burstmax <<<"$(latency 8)"
    wait "$burst"
    burst_s=$(cat "$work/burst")
    echo "$store $size: held in $held s; trip median $t50 ms p99 $t99 ms; RSS $rss MiB;" \
      "sends p99/slowest quiet $quiet99/$quietmax, resync $sync99/$syncmax," \
      "1,000 trips ($burst_s s) $burst99/$burstmax ms"
    results+=("$store $size $t50 $t99 $rss $quiet99 $quietmax $sync99 $syncmax $burst99 $burstmax $burst_s")
    kill "$gateway"
    wait "$gateway" 2>/dev/null || true
    if [ "$store" = redis ]; then
      kill "$redis_pid"
      wait "$redis_pid" 2>/dev/null || true
    fi
  done
done

echo
printf '%-9s %7s | %8s %8s | %7s | %-15s %-15s %-15s | %s\n' store numbers "trip p50" "trip p99" "RSS MiB" \
  "quiet p99/max" "resync p99/max" "burst p99/max" "1,000 trips took"
for row in "${results[@]}"; do
  read -r store size t50 t99 rss q99 qmax s99 smax b99 bmax bs <<<"$row"
  printf '%-9s %7s | %8s %8s | %7s | %-15s %-15s %-15s | %s s\n' "$store" "$size" "$t50" "$t99" "$rss" \
    "$q99/$qmax" "$s99/$smax" "$b99/$bmax" "$bs"
done
python3 - "${results[@]}" <<'PY'
import sys
rows = [r.split() for r in sys.argv[1:]]
for store in dict.fromkeys(r[0] for r in rows):
    mine = sorted((r for r in rows if r[0] == store), key=lambda r: int(r[1]))
    small, large = mine[0], mine[-1]
    ratio = float(large[2]) / float(small[2])
    print(f"{store}: trip median at {large[1]} / at {small[1]}: {ratio:.2f} (target <= 2.0: {'met' if ratio <= 2 else 'NOT met'});"
          f" RSS at {large[1]}: {large[4]} MiB (target < 64: {'met' if float(large[4]) < 64 else 'NOT met'});"
          f" slowest send in a resync {large[8]} ms, in a burst {large[10]} ms (target < 10: "
          f"{'met' if max(float(large[8]), float(large[10])) < 10 else 'NOT met'})")
PY
