# Helpers shared by the scripts/bench-*.sh benchmarks; sourced, not run.
# Everything here talks to 127.0.0.1 only.

# release_executable <name> <cargo build arguments...>: builds in release
# and prints the path of the executable named <name> that cargo reports (so
# CARGO_TARGET_DIR is honoured), not a guessed path.
release_executable() {
  local name=$1 bin
  shift
  bin=$(cargo build --release --locked "$@" --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable")
       and m["target"]["name"] == sys.argv[1]]
print(exe[-1] if exe else "")' "$name")
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "cargo did not report a $name executable" >&2
    return 1
  fi
  readlink -f "$bin"
}

# install_missing <command>:<Debian package>...: installs, from Debian, the
# packages of the commands that are not on the PATH.
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# The wagate release binary.
wagate_release_bin() {
  release_executable wagate --bin wagate
}

# Which tree a binary was built from: the commit, and how many files of
# src, Cargo.toml and Cargo.lock differ from it.
tree_version() {
  local dirty
  dirty=$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock | wc -l)
  echo "tree $(git rev-parse --short HEAD)$([ "$dirty" -eq 0 ] || echo " + $dirty uncommitted changes")"
}

# scratch: a scratch directory in $work and a list $pids of processes to
# stop; on exit, however it comes, they are stopped and the directory goes.
scratch() {
  work=$(mktemp -d)
  pids=()
  trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  trap 'echo "$(basename "$0"): stopped by a signal" >&2; exit 143' TERM INT HUP
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port <port> [pid]: waits up to 30 s for a listener on the port; with
# a pid, fails as soon as that process has exited.
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
      echo "process $2 exited before port $1 opened" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  exit 1
}

# A text send of exactly 314 bytes: a typical template-free text message,
# the size every proxy benchmark in BENCHMARKS.md sends.
send_body() {
  python3 -c '
import json
msg = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "15550009999",
       "type": "text", "text": {"preview_url": False, "body": ""}}
base = len(json.dumps(msg, separators=(",", ":")))
msg["text"]["body"] = ("Your order has shipped and arrives tomorrow. " * 10)[: 314 - base]
print(json.dumps(msg, separators=(",", ":")), end="")
'
}

# nginx_conf <dir> <listen_port> <upstream_port> [top-level line]: writes
# <dir>/nginx.conf, nginx as a plain keep-alive reverse proxy with one
# worker, streaming both ways.
nginx_conf() {
  cat >"$1/nginx.conf" <<CONF
worker_processes 1;
${4:-}
daemon off;
pid $1/nginx.pid;
error_log $1/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream sim { server 127.0.0.1:$3; keepalive 128; }
  server {
    listen 127.0.0.1:$2;
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
}

# start_sim: starts the simulator on a free port (in $sim_port), logging to
# $work/sim.log, and waits for it; needs scratch first.
start_sim() {
  sim_port=$(free_port)
  "$bin" sim --no-record --listen "127.0.0.1:$sim_port" 2>"$work/sim.log" &
  pids+=($!)
  wait_port "$sim_port" $!
}

# trip_numbers <admin port> <token> <reason> [-c<clients>] [-t<file>]
#   <number>...: trips each number through the admin API over keep-alive
# connections, <clients> at once (default 1: one connection, in order); a
# number written first-last is the range. Prints the seconds it took, and
# with -t writes each trip's latency (ms) to <file>, one a line. Fails on
# the first answer that is not a 200.
trip_numbers() {
  python3 - "$@" <<'PY'
import http.client, json, sys, threading, time
port, token, reason = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rest = sys.argv[4:]
clients = 1
if len(rest) > 1 and rest[0].startswith("-c"):
    clients, rest = int(rest[0][2:]), rest[1:]
timings_path = None
if rest and rest[0].startswith("-t"):
    timings_path, rest = rest[0][2:], rest[1:]
numbers = []
for arg in rest:
    first, _, last = arg.partition("-")
    numbers.extend(range(int(first), int(last or first) + 1))
body = json.dumps({"reason": reason})
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
lock, timings, failures = threading.Lock(), [], []
queue = iter(numbers)
def client():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not failures:
        with lock:
            n = next(queue, None)
        if n is None:
            return
        start = time.monotonic()
        conn.request("POST", f"/admin/breakers/{n}/trip", body, headers)
        response = conn.getresponse()
        answer = response.read()
        with lock:
            timings.append((time.monotonic() - start) * 1000)
            if response.status != 200:
                failures.append(f"port {port}: trip {n}: HTTP {response.status} {answer[:300]!r}")
start = time.monotonic()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failures:
    sys.exit(failures[0])
if timings_path:
    with open(timings_path, "w") as f:
        f.write("\n".join(f"{t:.3f}" for t in timings))
print(f"{time.monotonic() - start:.1f}")
PY
}

# hey_p99 <seconds> <url>: POSTs $work/body.json with a bearer token, as an
# integration sends, at 1,000 req/s (10 connections x 100/s) for <seconds>;
# prints "p99_ms slowest_ms". Every answer must be a 200.
hey_p99() {
  local out
  out=$(timeout $(($1 + 60)) hey -z "${1}s" -t 5 -c 10 -q 100 -m POST -T application/json \
    -H "Authorization: Bearer bench-token" -D "$work/body.json" "$2")
  awk '
    $1 == "Slowest:" {slowest = $2 * 1000}
    $1 == "99%" && $2 == "in" {p99 = $3 * 1000}
    /^ *\[[0-9]+\]/ && $1 != "[200]" {bad += $2}
    /^Error distribution/ {errors = 1}
    END {
      if (p99 == "") {print "no latency in hey output" > "/dev/stderr"; exit 1}
      if (bad || errors) {print "hey saw non-200 answers or errors" > "/dev/stderr"; exit 1}
      printf "%.2f %.2f", p99, slowest
    }' <<<"$out"
}

# post_lua <file> <body>: writes a wrk script that POSTs <body> as JSON
# with a bearer token, as an integration sends.
post_lua() {
  cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = [[$2]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token"
LUA
}

# cpu_ticks <pid>: the process's user + system CPU time so far, in clock
# ticks (fields 14 and 15 of /proc/<pid>/stat; getconf CLK_TCK per second).
cpu_ticks() {
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# pinned_gateway <executable> <name>: starts a gateway on CPU 1 with one
# worker thread, forwarding to the simulator on $sim_port, logging to
# $work/<name>.log; waits for it and sets gateway_port and gateway_pid.
pinned_gateway() {
  gateway_port=$(free_port)
  WAGATE_LISTEN__PROXY="127.0.0.1:$gateway_port" \
  WAGATE_LISTEN__ADMIN="127.0.0.1:$(free_port)" \
  WAGATE_UPSTREAM__BASE_URL="http://127.0.0.1:$sim_port" \
  WAGATE_SERVER__WORKER_THREADS=1 \
  WAGATE_LOG__LEVEL=warn \
  WAGATE_STORE__PATH="$work/breakers-$2.json" \
    taskset -c 1 "$1" serve --config /dev/null 2>"$work/$2.log" &
  gateway_pid=$!
  pids+=("$gateway_pid")
  wait_port "$gateway_port" "$gateway_pid"
}

# pinned_nginx: starts nginx (one worker, see nginx_conf) on CPU 1 in front
# of the simulator on $sim_port; waits for it and sets nginx_port and
# nginx_worker, the pid of the worker that does the proxying.
pinned_nginx() {
  local master
  nginx_port=$(free_port)
  nginx_conf "$work" "$nginx_port" "$sim_port"
  taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" &
  master=$!
  pids+=("$master")
  wait_port "$nginx_port" "$master"
  nginx_worker=""
  for _ in $(seq 1 100); do
    nginx_worker=$(pgrep -P "$master" | head -n 1 || true)
    [ -n "$nginx_worker" ] && return 0
    sleep 0.05
  done
  echo "nginx started no worker" >&2
  exit 1
}
