#!/usr/bin/env bash
# Load benchmark of the gate: what refusing sends for open numbers costs the
# sends that pass, and how cheap a refusal is.
#
#   scripts/bench-gate.sh [rounds]        (default 5 rounds)
#
# Measured with wrk (64 connections, POST /v21.0/{id}/messages with the same
# 314-byte body as scripts/bench-proxy.sh), load generator on CPU 0, the
# simulator and the gateways on CPU 1, per round:
#   no-gate     forwarded sends/s through wagate with server.gate = false
#               (embedded store, no breakers)
#   gate-emb    forwarded sends/s with the gate on the embedded store
#   gate-redis  forwarded sends/s with the gate on Redis (a redis-server
#               started here on a free port, also on CPU 1)
#   refused     refused sends/s for an open number through gate-emb
# The gated gateways each hold 10,000 other numbers, put there through the
# admin API before measuring, so every gate check is a real lookup in a
# snapshot of 10,000 breakers (a snapshot with no breakers is skipped with
# one atomic load). Forwarded traffic goes to one closed number; refused
# traffic to a number locked in the simulator and tripped by one send. Both
# use the same wrk script, so the load generator's own cost per request is
# the same in both.
#
# Prints every round, then the medians of the per-round ratios:
# gate-emb/no-gate and gate-redis/no-gate (target >= 0.95: the gate costs at
# most 5% of throughput) and refused/gate-emb (target >= 3.0). Single runs
# vary by 25-30% on these machines; only ratios measured side by side mean
# much.
#
# "Refusing is 3x cheaper" is also measured as cost rather than rate: the
# CPU time gate-emb's process uses per forwarded send over its CPU time per
# refused send. The refused rate is set by wrk more than by the gateway
# (wrk's own CPU is printed), so the rate ratio is a lower bound; the cost
# ratio is what the gateway itself spends.
#
# Why the three gateways are started once and kept for the whole run rather
# than restarted per round: holding 10,000 numbers through the admin API
# takes minutes (each change costs time in proportion to the breakers
# already held), so it is done once; and every round then measures all
# three under the same machine conditions, in a rotating order so a drift
# in load does not always fall on the same one. While one gateway is
# measured the other two (and redis-server, unless gate-redis is measured)
# are stopped with SIGSTOP and continued afterwards: idle, a gateway holding
# 10,000 breakers still uses a few percent of a CPU (it looks over its
# breakers once a second and resyncs them every 30 s; the script prints how
# much), and that work would land on CPU 1 in the middle of another
# gateway's measurement. A measured gateway's own background work counts
# against it. During the holds only, the gateways may use both CPUs, which
# roughly halves that setup; they are pinned back to CPU 1 before anything
# is measured.
#
# The wagate measured is the release binary cargo builds from this tree.
# All traffic goes to 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

rounds=${1:-5}
duration=${BENCH_DURATION:-8s}
held=${BENCH_HELD:-10000}
connections=64
seconds=${duration%s}
case $seconds in '' | *[!0-9]*)
  echo "BENCH_DURATION must be whole seconds like 8s, not $duration" >&2
  exit 2
  ;;
esac

for tool in wrk taskset redis-server curl /usr/bin/time; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing wrk, redis-server, curl and time from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk redis-server curl time util-linux >/dev/null
    break
  fi
done

bin=$(wagate_release_bin)
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "wagate: $bin (release, built $(date -r "$bin" +%FT%T), $(tree_version))"

# The embedded stores' files go to tmpfs when there is one: every admin
# change rewrites the whole file with fsync, which only the setup does.
work=$(mktemp -d -p "$([ -d /dev/shm ] && echo /dev/shm || echo /tmp)")
pids=()
cleanup() {
  # A stopped process takes SIGTERM only once it is continued.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && kill -CONT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "$(basename "$0"): stopped by a signal" >&2; exit 143' TERM INT HUP

pin() { # cpus pid...: every thread of each process
  local cpus=$1 pid
  shift
  for pid in "$@"; do taskset -a -p -c "$cpus" "$pid" >/dev/null; done
}

token=bench-admin-token
closed=200000000000001
open=100000000000001
first_held=300000000000000
last_held=$((first_held + held - 1))

redis_port=$(free_port)
taskset -c 1 redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
  --daemonize no --loglevel warning >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=($redis_pid)
wait_port "$redis_port"

sim_port=$(free_port)
taskset -c 1 "$bin" sim --no-record --listen "127.0.0.1:$sim_port" 2>"$work/sim.log" &
sim_pid=$!
pids+=($sim_pid)
wait_port "$sim_port"

names=(no-gate gate-emb gate-redis)
proxy_ports=() admin_ports=() gw_pids=()
for i in 0 1 2; do
  proxy_ports[i]=$(free_port)
  admin_ports[i]=$(free_port)
  store=(WAGATE_STORE__PATH="$work/${names[i]}.json")
  [ "$i" -eq 2 ] && store=(WAGATE_STORE__REDIS_URL="redis://127.0.0.1:$redis_port")
  env WAGATE_LISTEN__PROXY="127.0.0.1:${proxy_ports[i]}" \
    WAGATE_LISTEN__ADMIN="127.0.0.1:${admin_ports[i]}" \
    WAGATE_UPSTREAM__BASE_URL="http://127.0.0.1:$sim_port" \
    WAGATE_SERVER__WORKER_THREADS=1 \
    WAGATE_SERVER__GATE="$([ "$i" -eq 0 ] && echo false || echo true)" \
    WAGATE_LOG__LEVEL=warn \
    WAGATE_ADMIN__TOKEN="$token" \
    "${store[@]}" \
    taskset -c 1 "$bin" serve --config /dev/null 2>"$work/${names[i]}.log" &
  gw_pids[i]=$!
  pids+=($!)
done
for i in 0 1 2; do
  wait_port "${proxy_ports[i]}"
  wait_port "${admin_ports[i]}"
  if [ "$(readlink -f "/proc/${gw_pids[i]}/exe")" != "$bin" ]; then
    echo "the ${names[i]} gateway is not $bin" >&2
    exit 1
  fi
done

# Hold the other numbers through the admin API on both gated gateways at
# once, each over one keep-alive connection.
echo "holding $held numbers on gate-emb and gate-redis through the admin API..."
pin 0,1 "${gw_pids[1]}" "${gw_pids[2]}"
reason="bench-gate: held so the gate looks up a real snapshot"
trip_numbers "${admin_ports[1]}" "$token" "$reason" "$first_held-$last_held" >"$work/hold-emb.out" &
hold_emb=$!
pids+=($hold_emb)
trip_numbers "${admin_ports[2]}" "$token" "$reason" "$first_held-$last_held" >"$work/hold-redis.out" &
hold_redis=$!
pids+=($hold_redis)
wait "$hold_emb"
wait "$hold_redis"
pin 1 "${gw_pids[1]}" "${gw_pids[2]}"
for pid in "${gw_pids[@]}" "$sim_pid" "$redis_pid"; do
  for task in /proc/"$pid"/task/*; do
    if [ "$(awk '/^Cpus_allowed_list/ {print $2}' "$task/status")" != 1 ]; then
      echo "thread $task is not pinned to CPU 1" >&2
      exit 1
    fi
  done
done
for i in 1 2; do
  state=$(curl -sS --max-time 10 "http://127.0.0.1:${admin_ports[i]}/admin/breakers/$last_held" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("state", "?"))')
  count=$(curl -sS --max-time 30 "http://127.0.0.1:${admin_ports[i]}/admin/breakers" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["breakers"]))')
  if [ "$state" != held ] || [ "$count" -ne "$held" ]; then
    echo "${names[i]}: $last_held is '$state' and $count breakers are listed, not $held held" >&2
    exit 1
  fi
done
echo "held $held on gate-emb in $(cat "$work/hold-emb.out") s, on gate-redis in $(cat "$work/hold-redis.out") s; $last_held shows as held on both"

# The open number: locked in the simulator, tripped on gate-emb by one send
# that the simulator answers with Meta's 131031.
body=$(send_body)
[ ${#body} -eq 314 ] || { echo "body is ${#body} bytes, not 314" >&2; exit 1; }
curl -sS --max-time 10 -o /dev/null -X POST "http://127.0.0.1:$sim_port/_sim/numbers/$open/lock"
send() { # port number -> HTTP status
  curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -H 'Authorization: Bearer bench-token' --data-binary "$body" "http://127.0.0.1:$1/v21.0/$2/messages"
}
breaker_state() { # admin_port number
  curl -sS --max-time 10 "http://127.0.0.1:$1/admin/breakers/$2" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("state", "none"))'
}
first_answer=$(send "${proxy_ports[1]}" "$open")
second_answer=$(send "${proxy_ports[1]}" "$open")
state=$(breaker_state "${admin_ports[1]}" "$open")
if [ "$first_answer" != 403 ] || [ "$second_answer" != 503 ] || [ "$state" != open ]; then
  echo "tripping $open: answers $first_answer then $second_answer, breaker '$state'" >&2
  exit 1
fi
echo "$open locked in the simulator, tripped on gate-emb: answered 403 (forwarded), then 503 (refused)"

post_lua "$work/post.lua" "$body"
limit=$((seconds + 30))

cpu_ms() { # pid -> CPU time used so far, in ms
  awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"
}
# pid port number expect [duration] -> "requests/s wrk_cpu% gateway_us/request".
# expect: 2xx (every answer a success) or refused (every answer a non-2xx).
# The last column is the CPU time the gateway process (pid) used during the
# run, user and system, divided by the requests wrk completed.
measure() {
  local out cpu_before
  cpu_before=$(cpu_ms "$1")
  out=$(timeout "$limit" /usr/bin/time -f 'cpu %P' taskset -c 0 \
    wrk -t1 -c$connections -d"${5:-$duration}" -s "$work/post.lua" \
    "http://127.0.0.1:$2/v21.0/$3/messages" 2>&1)
  out+=$'\ngateway_ms '$(($(cpu_ms "$1") - cpu_before))
  awk -v what="port $2, number $3" -v expect="$4" '
    / requests in / {total = $1}
    /^Requests\/sec/ {rps = $2}
    /Non-2xx or 3xx responses:/ {non2xx = $NF}
    /^ *Socket errors/ {print what ": wrk: " $0 > "/dev/stderr"}
    /^cpu / {cpu = $2}
    /^gateway_ms / {gateway_ms = $2}
    END {
      if (rps == "" || total == 0) {print what ": no result from wrk" > "/dev/stderr"; exit 1}
      if (expect == "2xx" && non2xx + 0 > 0)
        printf "%s: %d of %d answers were not 2xx\n", what, non2xx, total > "/dev/stderr"
      if (expect == "refused" && non2xx + 0 != total + 0)
        printf "%s: %d of %d answers were refusals\n", what, non2xx, total > "/dev/stderr"
      sub(/%/, "", cpu)
      printf "%s %s %.2f\n", rps, cpu, gateway_ms * 1000 / total
    }' <<<"$out"
}

# warm-up: connections, pools and page cache
for i in 0 1 2; do measure "${gw_pids[i]}" "${proxy_ports[i]}" "$closed" 2xx 3s >/dev/null; done
measure "${gw_pids[1]}" "${proxy_ports[1]}" "$open" refused 3s >/dev/null

# What the idle processes cost CPU 1, over 5 s with no traffic.
before=()
for pid in "${gw_pids[@]}" "$redis_pid" "$sim_pid"; do before+=("$(cpu_ms "$pid")"); done
sleep 5
idle=()
k=0
for pid in "${gw_pids[@]}" "$redis_pid" "$sim_pid"; do
  idle+=("$(((($(cpu_ms "$pid") - before[k]) + 2) / 5))")
  k=$((k + 1))
done
echo "idle CPU (ms per s): no-gate ${idle[0]}, gate-emb ${idle[1]}, gate-redis ${idle[2]}, redis-server ${idle[3]}, sim ${idle[4]}"
echo

printf '%-6s %10s %10s %10s %10s | %9s %9s %9s | %6s | %23s %9s | %5s\n' round no-gate gate-emb gate-redis refused \
  emb/no redis/no ref/fwd wrk% "gateway us/send fwd/ref" "fwd/ref" secs
: >"$work/rows"
cases=("${proxy_ports[0]} $closed 2xx" "${proxy_ports[1]} $closed 2xx" "${proxy_ports[2]} $closed 2xx"
  "${proxy_ports[1]} $open refused")
case_gw=(0 1 2 1)
ready() { # admin_port: wait until the gateway answers /readyz with 200
  for _ in $(seq 1 100); do
    [ "$(curl -s --max-time 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "the gateway on admin port $1 is not ready" >&2
  exit 1
}
only() { # gateway index (0-2) or "all": the others and an unused redis-server stop
  local i
  for i in 0 1 2; do
    if [ "$1" = all ] || [ "$1" = "$i" ]; then continue; fi
    kill -STOP "${gw_pids[i]}"
  done
  if [ "$1" = all ] || [ "$1" = 2 ]; then kill -CONT "$redis_pid"; else kill -STOP "$redis_pid"; fi
  for i in 0 1 2; do
    if [ "$1" = all ] || [ "$1" = "$i" ]; then
      kill -CONT "${gw_pids[i]}"
      ready "${admin_ports[i]}"
    fi
  done
}
rps=() cpu=() gw_us=()
for round in $(seq 1 "$rounds"); do
  start=$SECONDS
  state=$(breaker_state "${admin_ports[1]}" "$open")
  if [ "$state" != open ]; then
    echo "round $round: the breaker of $open is '$state', not open" >&2
    exit 1
  fi
  for k in 0 1 2 3; do
    i=$(((k + round - 1) % 4))
    only "${case_gw[i]}"
    read -r "rps[$i]" "cpu[$i]" "gw_us[$i]" <<<"$(measure "${gw_pids[case_gw[i]]}" ${cases[i]})"
  done
  only all
  printf '%-6s %10.0f %10.0f %10.0f %10.0f | %9.3f %9.3f %9.3f | %6s | %11.2f %11.2f %9.3f | %5d\n' "$round" \
    "${rps[0]}" "${rps[1]}" "${rps[2]}" "${rps[3]}" \
    "$(python3 -c "print(${rps[1]} / ${rps[0]})")" "$(python3 -c "print(${rps[2]} / ${rps[0]})")" \
    "$(python3 -c "print(${rps[3]} / ${rps[1]})")" "${cpu[3]}" \
    "${gw_us[1]}" "${gw_us[3]}" "$(python3 -c "print(${gw_us[1]} / ${gw_us[3]})")" $((SECONDS - start))
  echo "${rps[*]} ${gw_us[*]}" >>"$work/rows"
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "(sends/s at saturation, $connections connections, $duration each, measured in rotating order,"
echo " each gateway alone on CPU 1 with the simulator, the others stopped;"
echo " ref/fwd = refused / gate-emb; wrk% = the load generator's CPU during the refused run:"
echo " near 100% means wrk, not the gateway, set the refused rate, so ref/fwd is a lower bound;"
echo " gateway us/send = gate-emb's CPU time, user and system, per forwarded and per refused send,"
echo " and fwd/ref how many refusals cost what one forwarded send costs the gateway)"

python3 - "$work/rows" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
def show(label, xs, target):
    each = " ".join(f"{x:.3f}" for x in xs)
    verdict = "met" if eval(f"{statistics.median(xs)} {target}") else "NOT met"
    print(f"{label:<32}: {statistics.median(xs):.3f}  (target {target}: {verdict}; per round: {each})")
print()
show("median gate-emb / no-gate", [r[1] / r[0] for r in rows], ">= 0.95")
show("median gate-redis / no-gate", [r[2] / r[0] for r in rows], ">= 0.95")
show("median refused / forwarded", [r[3] / r[1] for r in rows], ">= 3.0")
show("median gateway CPU fwd / refused", [r[5] / r[7] for r in rows], ">= 3.0")
PY
