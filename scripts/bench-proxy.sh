#!/usr/bin/env bash
# Load benchmark of the proxy core: the simulator direct, nginx as a plain
# keep-alive reverse proxy, and wagate, measured side by side in one run.
#
#   scripts/bench-proxy.sh [rounds]        (default 5 rounds)
#
# Per round and target: requests/s at saturation (wrk, 64 connections,
# POST /v21.0/{id}/messages with a 314-byte body) and p50/p99 latency at a
# fixed 2,000 req/s (hey). Prints each round, then the medians of the
# per-round ratios wagate/nginx and wagate/direct (single runs vary by
# 25-30% on these machines; only ratios measured side by side mean much).
# The targets are measured in a different order each round so that a
# drift in the machine's load does not always fall on the same one.
#
# A fourth column, bare, is the throughput of examples/bare_proxy.rs: hyper
# and tokio forwarding with nothing of wagate, the floor of wagate's stack.
# bare/nginx says whether the stack itself can match nginx; wagate/bare is
# what wagate's own work costs.
#
# Next to each saturation run, the proxy's own CPU time per request (user
# and system, from /proc/<pid>/stat, over the requests wrk completed): the
# proxy's cost without the simulator's share of the core, which moves less
# from run to run than requests/s do.
#
# The fixed rate: hey's -q is per worker and every worker's ticker starts at
# the same moment, so 64 workers at 2000/64 req/s each send bursts of 64
# requests every 32 ms. The latency columns are therefore how fast such a
# burst drains through the proxy and the simulator on one core, not the
# latency of evenly spaced arrivals; BENCH_LAT_CONNECTIONS changes the burst
# size. hey reports times in whole 0.1 ms steps.
#
# A round is 4 wrk runs and 3 hey runs of BENCH_DURATION each (7 x 8 s =
# 56 s by default); the last column prints what it really took. Every tool
# run is bounded by `timeout`, and hey's per-request timeout is short so a
# stuck request cannot hold a run open long after its duration.
#
# The wagate measured is the release binary cargo builds from this tree; its
# path comes from cargo (so CARGO_TARGET_DIR is honoured), and the running
# process's executable is checked against it.
#
# All traffic goes to 127.0.0.1. The load generator runs on CPU 0; the
# simulator and the proxy under test share CPU 1, so a proxy's cost shows up
# as lost throughput. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

rounds=${1:-5}
duration=${BENCH_DURATION:-8s}
rate=${BENCH_RATE:-2000}
connections=64
lat_connections=${BENCH_LAT_CONNECTIONS:-64}
seconds=${duration%s}
case $seconds in '' | *[!0-9]*)
  echo "BENCH_DURATION must be whole seconds like 8s, not $duration" >&2
  exit 2
  ;;
esac

for tool in wrk hey nginx taskset; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing wrk, hey and nginx-light from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk hey nginx-light util-linux >/dev/null
    break
  fi
done

bin=$(wagate_release_bin)
bare=$(release_executable bare_proxy --example bare_proxy)
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "wagate: $bin (release, built $(date -r "$bin" +%FT%T), $(tree_version))"

scratch

sim_port=$(free_port)
taskset -c 1 "$bin" sim --no-record --listen "127.0.0.1:$sim_port" 2>"$work/sim.log" &
sim_pid=$!
pids+=($sim_pid)
wait_port "$sim_port"

pinned_nginx

# The floor of wagate's stack: hyper and tokio with nothing of wagate.
bare_port=$(free_port)
taskset -c 1 "$bare" "127.0.0.1:$bare_port" "127.0.0.1:$sim_port" 2>"$work/bare.log" &
bare_pid=$!
pids+=($bare_pid)
wait_port "$bare_port"

pinned_gateway "$bin" wagate
wagate_port=$gateway_port wagate_pid=$gateway_pid
if [ "$(readlink -f "/proc/$wagate_pid/exe")" != "$bin" ]; then
  echo "the wagate listening on $wagate_port is not $bin" >&2
  exit 1
fi

# A text send of exactly 314 bytes: a typical template-free text message,
# the size every proxy benchmark in BENCHMARKS.md sends.
body=$(send_body)
[ ${#body} -eq 314 ] || { echo "body is ${#body} bytes, not 314" >&2; exit 1; }
printf '%s' "$body" >"$work/body.json"
post_lua "$work/post.lua" "$body"
path=/v21.0/200000000000001/messages
limit=$((seconds + 30))

ticks_per_second=$(getconf CLK_TCK)

throughput() { # port pid [duration] -> "requests/s CPU-µs-per-request" of
  # the process pid; every answer must be a 2xx
  local out before after
  before=$(cpu_ticks "$2")
  out=$(timeout "$limit" taskset -c 0 wrk -t1 -c$connections -d"${3:-$duration}" -s "$work/post.lua" \
    "http://127.0.0.1:$1$path")
  after=$(cpu_ticks "$2")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "port $1: wrk saw failures:" >&2
    grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
  fi
  awk -v ticks=$((after - before)) -v hz="$ticks_per_second" '
    / requests in / {requests = $1}
    /^Requests\/sec/ {rps = $2}
    END {printf "%s %.2f", rps, requests ? ticks / hz * 1e6 / requests : 0}' <<<"$out"
}
per_worker=$(python3 -c "print(f'{$rate / $lat_connections:.3f}')")
latency() { # port -> "p50_ms p99_ms"; hey prints "  50% in 0.0025 secs"
  local out
  out=$(timeout "$limit" taskset -c 0 hey -z "$duration" -t 5 -c "$lat_connections" -q "$per_worker" \
    -m POST -T application/json -H "Authorization: Bearer bench-token" -D "$work/body.json" \
    "http://127.0.0.1:$1$path")
  awk -v port="$1" -v want="$rate" '
    /Requests\/sec:/ {rps = $2}
    $1 == "50%" && $2 == "in" {p50 = $3 * 1000}
    $1 == "99%" && $2 == "in" {p99 = $3 * 1000}
    /^ *\[[0-9]+\]/ && $1 != "[200]" {bad += $2}
    /^Error distribution/ {errors = 1}
    END {
      if (p50 == "" || p99 == "") {print "port " port ": no latency in hey output" > "/dev/stderr"; exit 1}
      if (bad || errors) print "port " port ": hey saw non-200 answers or errors" > "/dev/stderr"
      if (rps < want * 0.97) printf "port %s: hey reached %.0f req/s, not %d\n", port, rps, want > "/dev/stderr"
      printf "%.2f %.2f", p50, p99
    }' <<<"$out"
}

# warm-up: connections, pools and page cache
names=(direct nginx wagate bare)
ports=("$sim_port" "$nginx_port" "$wagate_port" "$bare_port")
procs=("$sim_pid" "$nginx_worker" "$wagate_pid" "$bare_pid")
for i in 0 1 2 3; do throughput "${ports[$i]}" "${procs[$i]}" 3s >/dev/null; done

printf '%-6s %10s %10s %10s %10s | %14s %14s %14s | %20s | %5s\n' round direct nginx wagate bare \
  "direct p50/p99" "nginx p50/p99" "wagate p50/p99" "CPU µs nginx/wagate/bare" secs
: >"$work/ratios"
rps=() cpu=() p50=() p99=()
for round in $(seq 1 "$rounds"); do
  start=$SECONDS
  for k in 0 1 2 3; do
    i=$(((k + round - 1) % 4))
    read -r "rps[$i]" "cpu[$i]" <<<"$(throughput "${ports[$i]}" "${procs[$i]}")"
  done
  for k in 0 1 2; do
    i=$(((k + round - 1) % 3))
    read -r "p50[$i]" "p99[$i]" <<<"$(latency "${ports[$i]}")"
  done
  printf '%-6s %10.0f %10.0f %10.0f %10.0f | %6.2f/%-7.2f %6.2f/%-7.2f %6.2f/%-7.2f | %6.1f/%6.1f/%6.1f | %5d\n' \
    "$round" "${rps[0]}" "${rps[1]}" "${rps[2]}" "${rps[3]}" \
    "${p50[0]}" "${p99[0]}" "${p50[1]}" "${p99[1]}" "${p50[2]}" "${p99[2]}" \
    "${cpu[1]}" "${cpu[2]}" "${cpu[3]}" $((SECONDS - start))
  echo "${rps[2]} ${rps[1]} ${rps[0]} ${p99[2]} ${p99[1]} ${p50[2]} ${p50[1]} ${rps[3]} ${cpu[2]} ${cpu[1]} ${cpu[3]}" >>"$work/ratios"
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "(throughput in req/s at saturation, ${connections} connections; latency in ms at ${rate} req/s, ${lat_connections} connections; CPU: each proxy's own CPU time per request at saturation, in µs; ${names[*]} measured in rotating order; bare is examples/bare_proxy.rs, throughput and CPU only)"

python3 - "$work/ratios" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = statistics.median
def ratios(f):
    return [f(r) for r in rows]
def show(label, xs, target=""):
    each = " ".join(f"{x:.3f}" for x in xs)
    print(f"{label:<38}: {med(xs):.3f}  {target + '  ' if target else ''}(per round: {each})")
print()
show("median throughput wagate/nginx", ratios(lambda r: r[0] / r[1]), "(target >= 1.0)")
show("median throughput wagate/direct", ratios(lambda r: r[0] / r[2]))
show("median throughput nginx/direct", ratios(lambda r: r[1] / r[2]))
show("median throughput bare hyper/nginx", ratios(lambda r: r[7] / r[1]))
show("median throughput wagate/bare hyper", ratios(lambda r: r[0] / r[7]))
show("median p99 at fixed rate wagate/nginx", ratios(lambda r: r[3] / r[4]), "(target <= 1.0)")
show("median p50 at fixed rate wagate/nginx", ratios(lambda r: r[5] / r[6]))
show("median proxy CPU per send wagate/nginx", ratios(lambda r: r[8] / r[9]))
show("median proxy CPU per send bare/nginx", ratios(lambda r: r[10] / r[9]))
PY
