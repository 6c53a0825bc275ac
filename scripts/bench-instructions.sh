#!/usr/bin/env bash
# User-space instructions per send, counted by callgrind in one run: wagate
# against nginx and against a bare hyper proxy (the floor of its stack),
# wagate with and without its gate, and a refused send against a forwarded
# one.
#
#   scripts/bench-instructions.sh
#
# The load benchmarks (bench-proxy.sh, bench-gate.sh) time the whole machine
# and move by 25-30% from run to run; this one counts instructions, which
# repeat within about 2% for the same binary and inputs whatever else the
# machine is doing (how many requests each wake-up finds ready still
# varies), so a change of a few percent in the proxy's own work shows. It does not see
# the kernel (system calls, TCP over loopback, context switches), which is
# about half of a proxied request's CPU time here: read it next to
# bench-proxy.sh, not instead of it.
#
# Each proxy runs under `valgrind --tool=callgrind` in front of the
# simulator (not instrumented) and gets two runs of hey (64 connections,
# POST /v21.0/{id}/messages, the 314-byte body of bench-proxy.sh): 960 and
# 5,952 requests. The difference between the two totals divided by the
# difference in requests is the cost of one request, with start-up (such as
# loading 10,000 breakers), the first connections and shutdown cancelled
# out. wagate runs with one worker thread (as in bench-proxy.sh), nginx with
# one worker and no master process.
#
# The cases:
#   nginx         forwarded sends through nginx, a plain keep-alive proxy
#   bare hyper    forwarded sends through examples/bare_proxy.rs, hyper and
#                 tokio with nothing of wagate: the floor of wagate's stack,
#                 so wagate/bare is the cost of wagate's own work
#   wagate        forwarded sends through wagate with its defaults (gate on,
#                 embedded store, no breaker open: the gate is one atomic
#                 load)
#   no-gate       forwarded sends, server.gate = false, on a Redis store
#                 holding 10,000 numbers
#   gate          forwarded sends for a closed number, gate on, the same
#                 Redis store: every send is classified and looked up in a
#                 snapshot of 10,001 breakers
#   refused       sends for a held number through the same gateway, all
#                 answered 503 by the gate
# The held numbers are put in Redis through the admin API of a gateway run
# natively before the measured ones start (bench-gate.sh does the same
# through throughput). Targets: gate/no-gate at most 1.05 (the gate costs
# at most 5%), forwarded/refused at least 3. Kernel time is not counted:
# a refusal makes two system calls, a forwarded send four and a trip over
# loopback to the upstream, so the full cost ratio is higher than this one.
#
# All traffic goes to 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh

for tool in valgrind callgrind_annotate hey nginx redis-server curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing valgrind, hey, nginx-light, redis-server and curl from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind hey nginx-light redis-server curl >/dev/null
    break
  fi
done

bin=$(wagate_release_bin)
bare=$(release_executable bare_proxy --example bare_proxy)
echo "wagate: $bin ($(tree_version))"

scratch
start_sim

send_body >"$work/body.json"
closed=200000000000001
held_open=100000000000001
first_held=300000000000000
held=10000
token=bench-admin-token

# instructions <name> <stop signal> <port> <number> <status> <requests>
# <command...>: runs the command under callgrind, sends the requests for the
# phone number, checks that every answer has the status, stops the command
# with the signal and prints the program's total.
instructions() {
  local name=$1 signal=$2 port=$3 number=$4 status=$5 requests=$6
  shift 6
  local out="$work/$name.$requests.callgrind"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$work/$name.valgrind.log" &
  local pid=$!
  wait_port "$port" "$pid"
  local answers
  answers=$(timeout 300 hey -n "$requests" -c 64 -t 20 -m POST -T application/json \
    -H "Authorization: Bearer bench-token" -D "$work/body.json" \
    "http://127.0.0.1:$port/v21.0/$number/messages" |
    awk -v want="[$status]" '$1 == want {print $2}')
  # hey sends requests rounded down to a multiple of its 64 workers.
  if [ "${answers:-0}" -ne $((requests / 64 * 64)) ]; then
    echo "$name: $((requests / 64 * 64)) requests sent, ${answers:-0} answered $status" >&2
    exit 1
  fi
  kill -"$signal" "$pid"
  wait "$pid" || true
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

per_request() { # name signal port number status command... -> instructions per request
  local name=$1 signal=$2 port=$3 number=$4 status=$5
  shift 5
  local small large
  small=$(instructions "$name" "$signal" "$port" "$number" "$status" 1000 "$@")
  large=$(instructions "$name" "$signal" "$port" "$number" "$status" 6000 "$@")
  echo $(((large - small) / (5952 - 960)))
}

gateway_env() { # gate(true|false) proxy_port admin_port store: exports a gateway's settings
  export WAGATE_LISTEN__PROXY="127.0.0.1:$2" \
    WAGATE_LISTEN__ADMIN="127.0.0.1:$3" \
    WAGATE_UPSTREAM__BASE_URL="http://127.0.0.1:$sim_port" \
    WAGATE_SERVER__WORKER_THREADS=1 \
    WAGATE_SERVER__GATE="$1" \
    WAGATE_LOG__LEVEL=warn \
    WAGATE_ADMIN__TOKEN="$token" \
    "$4"
}

wagate_port=$(free_port)
wagate_ir=$(
  gateway_env true "$wagate_port" "$(free_port)" WAGATE_STORE__PATH="$work/breakers.db"
  per_request wagate TERM "$wagate_port" "$closed" 200 "$bin" serve --config /dev/null
)

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
  --daemonize no --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port" $!
redis_store=WAGATE_STORE__REDIS_URL="redis://127.0.0.1:$redis_port"

# Hold 10,000 numbers and the refused one through a gateway run natively.
setup_proxy=$(free_port)
setup_admin=$(free_port)
(
  gateway_env true "$setup_proxy" "$setup_admin" "$redis_store"
  exec "$bin" serve --config /dev/null 2>"$work/setup.log"
) &
setup_pid=$!
pids+=($setup_pid)
wait_port "$setup_admin" "$setup_pid"
trip_numbers "$setup_admin" "$token" "bench-instructions: held so the gate looks up a real snapshot" \
  "$held_open" "$first_held-$((first_held + held - 1))" >/dev/null
kill "$setup_pid"
wait "$setup_pid" || true

# gated <gate> <number> <status> -> instructions per request
gated() {
  (
    proxy=$(free_port)
    gateway_env "$1" "$proxy" "$(free_port)" "$redis_store"
    per_request "gate-$1-$2" TERM "$proxy" "$2" "$3" "$bin" serve --config /dev/null
  )
}
nogate_ir=$(gated false "$closed" 200)
gate_ir=$(gated true "$closed" 200)
refused_ir=$(gated true "$held_open" 503)

nginx_port=$(free_port)
nginx_conf "$work" "$nginx_port" "$sim_port" "master_process off;"
# nginx finishes gracefully on QUIT.
nginx_ir=$(per_request nginx QUIT "$nginx_port" "$closed" 200 nginx -c "$work/nginx.conf" -p "$work")

bare_port=$(free_port)
bare_ir=$(per_request bare INT "$bare_port" "$closed" 200 "$bare" "127.0.0.1:$bare_port" "127.0.0.1:$sim_port")

echo "user-space instructions per send (callgrind, 4,992 sends each):"
printf '  %-34s %8d\n' "wagate, forwarded (defaults)" "$wagate_ir" "nginx, forwarded" "$nginx_ir" \
  "bare hyper proxy, forwarded" "$bare_ir" \
  "wagate no-gate, forwarded" "$nogate_ir" "wagate gate, 10,001 held, forwarded" "$gate_ir" \
  "wagate gate, refused" "$refused_ir"
python3 - "$wagate_ir" "$nginx_ir" "$bare_ir" "$nogate_ir" "$gate_ir" "$refused_ir" <<'PY'
import sys
wagate, nginx, bare, nogate, gate, refused = map(int, sys.argv[1:])
def show(label, value, target=None):
    verdict = ""
    if target:
        verdict = f"  (target {target}: {'met' if eval(f'{value} {target}') else 'NOT met'})"
    print(f"  {label:<34} {value:8.3f}{verdict}")
show("wagate / nginx", wagate / nginx)
show("bare hyper / nginx", bare / nginx)
show("wagate / bare hyper", wagate / bare)
show("gate / no-gate", gate / nogate, "<= 1.05")
show("forwarded / refused (gate)", gate / refused, ">= 3.0")
PY
