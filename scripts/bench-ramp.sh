#!/usr/bin/env bash
# Health release and the ramp: what a ramping number's admission costs, and
# what the health poller costs the sends of closed numbers.
#
#   scripts/bench-ramp.sh [seconds]        (default 8 s per measurement)
#
# 1. Ramp admission. For each store (embedded: governor in process; Redis:
#    one GCRA script call per send, on a redis-server started here), one
#    gateway with one worker thread and a single ramp stage of 1,000,000
#    sends per second (so every send is admitted and the admission itself is
#    measured): a number is held, released through the admin API, its probe
#    sent, and then hey (32 connections, full speed) sends for it, and for a
#    closed number in the same gateway as the baseline. Printed: sends/s of
#    each, the ratio ramping/closed, and for Redis the round trips and the
#    commands Redis ran per send (INFO commandstats, before and after; the
#    GCRA script's own TIME, GET and SET count as commands).
# 2. The poller on the closed path. One gateway (embedded store) with
#    10,000 numbers tripped by a real 131031 from the simulator and left
#    locked, so every poll answers BLOCKED and they stay open; polled every
#    second at up to 100 polls per second (health.waba_budget_per_hour =
#    360,000: far above Meta's 200, to make the poller's work visible). A
#    closed number's sends at 1,000 req/s (hey, 10 connections): p99 and the
#    slowest, with the poller running and, in a second gateway with the
#    same 10,000 open numbers, with health.enabled = false.
#
# All traffic goes to 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

seconds=${1:-8}
case $seconds in '' | *[!0-9]*)
  echo "seconds is a whole number, not $seconds" >&2
  exit 2
  ;;
esac

install_missing hey:hey curl:curl redis-server:redis-server redis-cli:redis-tools

bin=$(wagate_release_bin)
echo "wagate: $bin ($(tree_version))"

scratch
start_sim
send_body >"$work/body.json"
token=bench-admin-token
closed=200000000000001
ramping=200000000000002

# gateway <name> <config file> [VAR=value...]: starts a gateway with one
# worker thread on free ports (proxy_port, admin_port, gateway).
gateway() {
  local name=$1 config=$2
  shift 2
  proxy_port=$(free_port)
  admin_port=$(free_port)
  env WAGATE_LISTEN__PROXY="127.0.0.1:$proxy_port" \
    WAGATE_LISTEN__ADMIN="127.0.0.1:$admin_port" \
    WAGATE_UPSTREAM__BASE_URL="http://127.0.0.1:$sim_port" \
    WAGATE_SERVER__WORKER_THREADS=1 \
    WAGATE_LOG__LEVEL=warn \
    WAGATE_ADMIN__TOKEN="$token" \
    WAGATE_STORE__PATH="$work/$name.db" \
    "$@" \
    "$bin" serve --config "$config" 2>"$work/$name.log" &
  gateway=$!
  pids+=($gateway)
  wait_port "$admin_port" "$gateway"
}

admin_post() { # path body
  curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d "$2" "http://127.0.0.1:$admin_port$1"
}

send_once() { # number -> HTTP status
  curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -H 'Authorization: Bearer bench-token' --data-binary "@$work/body.json" \
    "http://127.0.0.1:$proxy_port/v21.0/$1/messages"
}

ramp_stage() { # number -> its ramp stage, or "-"
  curl -fsS "http://127.0.0.1:$admin_port/admin/breakers/$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("ramp_stage", "-"))'
}

rate() { # number -> sends/s at full speed; every answer must be a 200
  local out
  out=$(timeout $((seconds + 60)) hey -z "${seconds}s" -t 5 -c 32 -m POST -T application/json \
    -H "Authorization: Bearer bench-token" -D "$work/body.json" \
    "http://127.0.0.1:$proxy_port/v21.0/$1/messages")
  awk '
    $1 == "Requests/sec:" {rate = $2}
    /^ *\[[0-9]+\]/ && $1 != "[200]" {bad += $2}
    /^Error distribution/ {errors = 1}
    END {
      if (rate == "") {print "no rate in hey output" > "/dev/stderr"; exit 1}
      if (bad || errors) {print "hey saw non-200 answers or errors" > "/dev/stderr"; exit 1}
      printf "%.0f", rate
    }' <<<"$out"
}

latency() { # seconds -> "p99_ms slowest_ms" of a closed number at 1,000 req/s
  hey_p99 "$1" "http://127.0.0.1:$proxy_port/v21.0/$closed/messages"
}

redis_calls() { # [command] -> calls Redis has run so far (of that command)
  redis-cli -p "$redis_port" INFO commandstats |
    awk -F'[:=,]' -v want="${1:-}" '/^cmdstat_/ && (want == "" || $1 == "cmdstat_" want) {sum += $3} END {print sum + 0}'
}

metric() { # series, labels in any order -> its value (0 when absent)
  curl -fsS "http://127.0.0.1:$admin_port/metrics" | python3 -c '
import re, sys
def parse(series):
    name, _, labels = series.partition("{")
    return name, frozenset(re.findall(r"(\w+)=\"([^\"]*)\"", labels))
want = parse(sys.argv[1])
for line in sys.stdin:
    if line.startswith("#") or not line.strip():
        continue
    series, _, value = line.rpartition(" ")
    if parse(series) == want:
        print(value.strip())
        break
else:
    print(0)' "$1"
}

# 1. Ramp admission.
cat >"$work/ramp.toml" <<'TOML'
[breaker]
ramp_rates = [1000000]
ramp_stage = "1h"
TOML
declare -A sends_closed sends_ramping per_send
for store in embedded redis; do
  store_env=()
  if [ "$store" = redis ]; then
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$work" >"$work/redis.log" 2>&1 &
    pids+=($!)
    wait_port "$redis_port" $!
    store_env=(WAGATE_STORE__REDIS_URL="redis://127.0.0.1:$redis_port")
  fi
  gateway "ramp-$store" "$work/ramp.toml" "${store_env[@]}"
  admin_post "/admin/breakers/$ramping/trip" '{"reason":"bench-ramp"}'
  admin_post "/admin/breakers/$ramping/release" '{"reason":"bench-ramp"}'
  status=$(send_once "$ramping")
  [ "$status" = 200 ] || { echo "$store: the probe got $status" >&2; exit 1; }
  for _ in $(seq 1 100); do
    [ "$(ramp_stage "$ramping")" = 1 ] && break
    sleep 0.05
  done
  [ "$(ramp_stage "$ramping")" = 1 ] || { echo "$store: no ramp stage 1 after the probe" >&2; exit 1; }
  sends_closed[$store]=$(rate "$closed")
  if [ "$store" = redis ]; then
    before=$(redis_calls)
    scripts_before=$(redis_calls evalsha)
    sent_before=$(metric 'wagate_requests_total{route="send",outcome="ok"}')
  fi
  sends_ramping[$store]=$(rate "$ramping")
  if [ "$store" = redis ]; then
    sent=$(($(metric 'wagate_requests_total{route="send",outcome="ok"}') - sent_before))
    per_send[$store]=$(python3 -c "print(f'{($(redis_calls evalsha) - $scripts_before) / $sent:.2f} round trips (EVALSHA), {($(redis_calls) - $before) / $sent:.2f} commands counting those the script runs')")
  fi
  [ "$(ramp_stage "$ramping")" = 1 ] || { echo "$store: the ramp moved during the run" >&2; exit 1; }
  kill "$gateway"
  wait "$gateway" 2>/dev/null || true
done

# 2. The poller on the closed path: 10,000 numbers locked in the simulator
# and tripped by one send each.
first=400000000000000
count=10000
python3 - "$sim_port" "$first" "$count" <<'PY'
import http.client, sys
port, first, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for n in range(first, first + count):
    conn.request("POST", f"/_sim/numbers/{n}/lock", b"")
    r = conn.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"lock {n}: HTTP {r.status}")
PY
trip_all() { # sends one send per locked number through the gateway
  python3 - "$proxy_port" "$first" "$count" "$work/body.json" <<'PY'
import http.client, sys, threading
port, first, count, body = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), open(sys.argv[4], "rb").read()
numbers, lock, failures = iter(range(first, first + count)), threading.Lock(), []
headers = {"Authorization": "Bearer bench-token", "Content-Type": "application/json"}
def client():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not failures:
        with lock:
            n = next(numbers, None)
        if n is None:
            return
        conn.request("POST", f"/v21.0/{n}/messages", body, headers)
        r = conn.getresponse(); r.read()
        if r.status != 403:
            failures.append(f"{n}: HTTP {r.status}")
threads = [threading.Thread(target=client) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
if failures:
    sys.exit(failures[0])
PY
}
: >"$work/poll.toml"
declare -A p99 slowest
for mode in off on; do
  gateway "poll-$mode" "$work/poll.toml" \
    WAGATE_HEALTH__ENABLED=$([ "$mode" = on ] && echo true || echo false) \
    WAGATE_HEALTH__ACCESS_TOKEN=bench-system-token \
    WAGATE_HEALTH__INTERVAL=1s \
    WAGATE_HEALTH__MAX_INTERVAL=5s \
    WAGATE_HEALTH__WABA_BUDGET_PER_HOUR=360000 \
    WAGATE_BREAKER__MIN_OPEN=1s
  trip_all
  open=$(metric 'wagate_breakers{state="open",kind="number"}')
  [ "${open%.*}" -ge "$count" ] || { echo "poller $mode: $open numbers open, not $count" >&2; exit 1; }
  polls_before=$(metric 'wagate_health_polls_total{result="ok",state="blocked"}')
  start=$(date +%s.%N)
  read -r p99[$mode] slowest[$mode] <<<"$(latency "$seconds")"
  polled=$(python3 -c "print(f'{($(metric 'wagate_health_polls_total{result="ok",state="blocked"}') - $polls_before) / ($(date +%s.%N) - $start):.0f}')")
  echo "poller $mode: $count numbers open, $polled polls/s during the sends"
  kill "$gateway"
  wait "$gateway" 2>/dev/null || true
done

echo
printf '%-9s | %12s %13s %7s | %s\n' store "closed/s" "ramping/s" ratio "Redis per ramping send"
for store in embedded redis; do
  printf '%-9s | %12s %13s %7s | %s\n' "$store" "${sends_closed[$store]}" "${sends_ramping[$store]}" \
    "$(python3 -c "print(f'{${sends_ramping[$store]} / ${sends_closed[$store]}:.3f}')")" "${per_send[$store]:-0 (no Redis)}"
done
echo "ramping redis / ramping embedded: $(python3 -c "print(f'{${sends_ramping[redis]} / ${sends_ramping[embedded]}:.3f}')")"
echo
echo "closed sends at 1,000/s with $count open numbers (p99 / slowest, ms):"
echo "  poller off: ${p99[off]} / ${slowest[off]}"
echo "  poller on:  ${p99[on]} / ${slowest[on]}"
echo "  p99 on / off: $(python3 -c "print(f'{${p99[on]} / ${p99[off]}:.2f}')")"
