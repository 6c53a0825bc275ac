#!/usr/bin/env bash
# Two wagate builds compared under the same load at the same moment: the
# proxy's own CPU time per request of B against A.
#
#   scripts/bench-ab.sh <wagate A> <wagate B> [rounds]     (default 8)
#   scripts/bench-ab.sh <wagate A> nginx [rounds]
#
# For a change to the hot path: build the commit before it and the change
# (say into two target directories), and pass both executables. With the
# word nginx as B, B is nginx as a plain keep-alive reverse proxy (as in
# bench-proxy.sh; its worker's CPU time is read).
#
# Why at the same moment: on these machines a proxy's CPU time per request
# moves by 30% from one 8-second run to the next, far more than most
# changes, and running A and B one after the other (as bench-proxy.sh does
# for its targets) needs many rounds to see a few percent. Here each round
# loads A and B at once, each with its own wrk (64 connections, the
# 314-byte send of bench-proxy.sh), so whatever the machine does meanwhile
# falls on both. Measured with the same build as A and B: rounds within
# 1.5% of each other while the absolute figure moved from 34 to 53 µs.
#
# Each round reads each gateway's user and system CPU time from
# /proc/<pid>/stat and divides it by the requests its wrk completed. Which
# wrk starts first alternates from round to round, since the first one
# started measured about 1% cheaper. The result is the median of the
# per-round ratios B/A: below 1.0, B spends less CPU per request.
#
# The gateways, and the simulator they forward to (run from A), share CPU
# 1; the load generators run on CPU 0. All traffic goes to 127.0.0.1, every
# run is bounded by `timeout`, and everything started here is stopped on
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

if [ $# -lt 2 ]; then
  echo "usage: $0 <wagate A> <wagate B> [rounds]" >&2
  exit 2
fi
a_bin=$(readlink -f "$1")
b_bin=$2
[ "$b_bin" = nginx ] || b_bin=$(readlink -f "$b_bin")
rounds=${3:-8}
duration=${BENCH_DURATION:-6s}
seconds=${duration%s}
case $seconds in '' | *[!0-9]*)
  echo "BENCH_DURATION must be whole seconds like 6s, not $duration" >&2
  exit 2
  ;;
esac
for bin in "$a_bin" "$b_bin"; do
  [ "$bin" = nginx ] || [ -x "$bin" ] || { echo "$bin is not an executable" >&2; exit 2; }
done
for tool in wrk taskset nginx; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing wrk and nginx-light from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light util-linux >/dev/null
    break
  fi
done

scratch
bin=$a_bin
sim_port=$(free_port)
taskset -c 1 "$bin" sim --no-record --listen "127.0.0.1:$sim_port" 2>"$work/sim.log" &
pids+=($!)
wait_port "$sim_port" $!

pinned_gateway "$a_bin" a
port_a=$gateway_port pid_a=$gateway_pid
if [ "$b_bin" = nginx ]; then
  pinned_nginx
  port_b=$nginx_port pid_b=$nginx_worker
else
  pinned_gateway "$b_bin" b
  port_b=$gateway_port pid_b=$gateway_pid
fi

post_lua "$work/post.lua" "$(send_body)"
path=/v21.0/200000000000001/messages
ticks_per_second=$(getconf CLK_TCK)
load() { # a|b duration: wrk against gateway A or B, output in $work/<a|b>.wrk
  local port=$port_a
  [ "$1" = b ] && port=$port_b
  timeout $((seconds + 30)) taskset -c 0 wrk -t1 -c64 -d"$2" -s "$work/post.lua" \
    "http://127.0.0.1:$port$path" >"$work/$1.wrk"
}

echo "A: $a_bin"
echo "B: $b_bin"
printf '%-6s %14s %14s %8s\n' round "A µs/request" "B µs/request" "B/A"
: >"$work/ratios"
# Round 0 warms up connections and caches and is not counted.
for round in $(seq 0 "$rounds"); do
  this=$duration
  [ "$round" -eq 0 ] && this=3s
  if [ $((round % 2)) -eq 0 ]; then order=(a b); else order=(b a); fi
  a0=$(cpu_ticks "$pid_a")
  b0=$(cpu_ticks "$pid_b")
  load "${order[0]}" "$this" &
  first=$!
  load "${order[1]}" "$this" &
  second=$!
  wait "$first" "$second"
  a1=$(cpu_ticks "$pid_a")
  b1=$(cpu_ticks "$pid_b")
  if grep -qE 'Non-2xx|Socket errors' "$work/a.wrk" "$work/b.wrk"; then
    echo "round $round: wrk saw failures:" >&2
    grep -E 'Non-2xx|Socket errors' "$work/a.wrk" "$work/b.wrk" >&2
  fi
  [ "$round" -eq 0 ] && continue
  python3 - "$round" "$ticks_per_second" $((a1 - a0)) $((b1 - b0)) \
    "$(awk '/ requests in /{print $1}' "$work/a.wrk")" \
    "$(awk '/ requests in /{print $1}' "$work/b.wrk")" "$work/ratios" <<'PY'
import sys
round_, hz, a_ticks, b_ticks, a_req, b_req = map(int, sys.argv[1:7])
a = a_ticks / hz * 1e6 / a_req
b = b_ticks / hz * 1e6 / b_req
print(f"{round_:<6} {a:14.2f} {b:14.2f} {b / a:8.3f}")
with open(sys.argv[7], "a") as out:
    out.write(f"{b / a}\n")
PY
done
python3 - "$work/ratios" <<'PY'
import statistics, sys
ratios = [float(line) for line in open(sys.argv[1])]
print(f"\nmedian proxy CPU per request B/A: {statistics.median(ratios):.3f} "
      f"(rounds {min(ratios):.3f}-{max(ratios):.3f}; below 1.0, B is cheaper)")
PY
