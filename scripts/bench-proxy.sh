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
#
# All traffic goes to 127.0.0.1. The load generator runs on CPU 0; the
# simulator and the proxy under test share CPU 1, so a proxy's cost shows up
# as lost throughput. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-5}
duration=${BENCH_DURATION:-8s}
rate=${BENCH_RATE:-2000}
connections=64

for tool in wrk hey nginx taskset; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing wrk, hey and nginx-light from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk hey nginx-light util-linux >/dev/null
    break
  fi
done

cargo build --release --locked --bin wagate
bin=target/release/wagate
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  exit 1
}

sim_port=$(free_port)
taskset -c 1 "$bin" sim --no-record --listen "127.0.0.1:$sim_port" 2>"$work/sim.log" &
pids+=($!)
wait_port "$sim_port"

nginx_port=$(free_port)
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream sim { server 127.0.0.1:$sim_port; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    client_max_body_size 100m;
    location / {
      proxy_pass http://sim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
CONF
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
wait_port "$nginx_port"

wagate_port=$(free_port)
WAGATE_LISTEN__PROXY="127.0.0.1:$wagate_port" \
WAGATE_LISTEN__ADMIN="127.0.0.1:$(free_port)" \
WAGATE_UPSTREAM__BASE_URL="http://127.0.0.1:$sim_port" \
WAGATE_SERVER__WORKER_THREADS=1 \
WAGATE_LOG__LEVEL=warn \
WAGATE_STORE__PATH="$work/breakers.json" \
  taskset -c 1 "$bin" serve --config /dev/null 2>"$work/wagate.log" &
pids+=($!)
wait_port "$wagate_port"

# A text send of exactly 314 bytes, the size used in DESIGN.md's budget.
body=$(python3 -c '
import json
msg = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "15550009999",
       "type": "text", "text": {"preview_url": False, "body": ""}}
base = len(json.dumps(msg, separators=(",", ":")))
msg["text"]["body"] = ("Your order has shipped and arrives tomorrow. " * 10)[: 314 - base]
print(json.dumps(msg, separators=(",", ":")), end="")
')
printf '%s' "$body" >"$work/body.json"
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$body]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token"
LUA
path=/v21.0/200000000000001/messages

throughput() { # port -> requests/s
  taskset -c 0 wrk -t1 -c$connections -d"$duration" -s "$work/post.lua" "http://127.0.0.1:$1$path" \
    | awk '/^Requests\/sec/ {print $2}'
}
latency() { # port -> "p50_ms p99_ms"
  local per_worker=$(( rate / connections ))
  taskset -c 0 hey -z "$duration" -c $connections -q $per_worker -m POST \
    -T application/json -H "Authorization: Bearer bench-token" -D "$work/body.json" \
    "http://127.0.0.1:$1$path" \
    | awk '/ 50%% in/ {p50=$3*1000} / 99%% in/ {p99=$3*1000} END {printf "%.2f %.2f", p50, p99}'
}

# warm-up
throughput "$sim_port" >/dev/null; throughput "$nginx_port" >/dev/null; throughput "$wagate_port" >/dev/null

printf '%-6s %10s %10s %10s | %14s %14s %14s\n' round direct nginx wagate "direct p50/p99" "nginx p50/p99" "wagate p50/p99"
: >"$work/ratios"
for round in $(seq 1 "$rounds"); do
  d=$(throughput "$sim_port"); n=$(throughput "$nginx_port"); w=$(throughput "$wagate_port")
  read -r dl50 dl99 <<<"$(latency "$sim_port")"
  read -r nl50 nl99 <<<"$(latency "$nginx_port")"
  read -r wl50 wl99 <<<"$(latency "$wagate_port")"
  printf '%-6s %10.0f %10.0f %10.0f | %6.2f/%-7.2f %6.2f/%-7.2f %6.2f/%-7.2f\n' \
    "$round" "$d" "$n" "$w" "$dl50" "$dl99" "$nl50" "$nl99" "$wl50" "$wl99"
  echo "$w $n $d $wl99 $nl99 $wl50 $nl50" >>"$work/ratios"
done

python3 - "$work/ratios" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs)
print()
print(f"median throughput wagate/nginx : {med([w/n for w,n,d,*_ in rows]):.3f}  (target >= 1.0)")
print(f"median throughput wagate/direct: {med([w/d for w,n,d,*_ in rows]):.3f}")
print(f"median throughput nginx/direct : {med([n/d for w,n,d,*_ in rows]):.3f}")
print(f"median p99 at fixed rate wagate/nginx: {med([r[3]/r[4] for r in rows]):.3f}  (target <= 1.0)")
print(f"median p50 at fixed rate wagate/nginx: {med([r[5]/r[6] for r in rows]):.3f}")
PY
