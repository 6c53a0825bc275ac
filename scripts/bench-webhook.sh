#!/usr/bin/env bash
# Webhook deliveries through wagate against the same receiver reached
# directly, in one run.
#
#   scripts/bench-webhook.sh [seconds]          (default 8 per measurement)
#
# The receiver is nginx answering 200 to every POST (it reads the body),
# on 127.0.0.1. The delivery is a realistic batch: one messages change with
# two statuses (sent and delivered) for one number, signed with the app
# secret as Meta would. wagate (one worker thread, embedded store) verifies
# the signature, inspects the batch and forwards it to the receiver.
#
# It prints:
#   1. deliveries/s at full speed (hey, 16 connections), direct and through
#      wagate, and their ratio;
#   2. p50 and p99 at a fixed 1,000 deliveries/s (10 connections x 100/s),
#      direct and through wagate, and what wagate adds (target: under 1 ms
#      at p99).
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
install_missing hey:hey nginx:nginx-light

bin=$(wagate_release_bin)
echo "wagate: $bin ($(tree_version))"
scratch
secret=bench-app-secret

receiver_port=$(free_port)
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_max_body_size 4m;
  client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$receiver_port;
    location / { return 200 "ok"; }
  }
}
CONF
nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" &
pids+=($!)
wait_port "$receiver_port" $!

proxy_port=$(free_port)
env WAGATE_LISTEN__PROXY="127.0.0.1:$proxy_port" \
  WAGATE_LISTEN__ADMIN="127.0.0.1:$(free_port)" \
  WAGATE_UPSTREAM__BASE_URL="http://127.0.0.1:9" \
  WAGATE_SERVER__WORKER_THREADS=1 \
  WAGATE_LOG__LEVEL=warn \
  WAGATE_STORE__PATH="$work/breakers.db" \
  WAGATE_WEBHOOK__APP_SECRET="$secret" \
  WAGATE_WEBHOOK__FORWARD_URL="http://127.0.0.1:$receiver_port/hook" \
  "$bin" serve --config /dev/null 2>"$work/wagate.log" &
pids+=($!)
wait_port "$proxy_port" $!

python3 - "$work/body.json" "$work/signature" "$secret" <<'PY'
import hashlib, hmac, json, sys
status = lambda s, t: {"id": "wamid.HBgLMTU1NTAwMDk5OTkVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
    "status": s, "timestamp": t, "recipient_id": "15550009999",
    "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}}
body = {"object": "whatsapp_business_account", "entry": [{"id": "100000000000001", "changes": [
    {"field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "200000000000001"},
        "statuses": [status("sent", "1786700000"), status("delivered", "1786700001")]}}]}]}
raw = json.dumps(body, separators=(",", ":")).replace("/", "\\/").encode()
open(sys.argv[1], "wb").write(raw)
open(sys.argv[2], "w").write("sha256=" + hmac.new(sys.argv[3].encode(), raw, hashlib.sha256).hexdigest())
PY
signature=$(cat "$work/signature")
echo "delivery: $(wc -c <"$work/body.json") bytes, two statuses"

run() { # url, hey arguments... -> hey output; every answer must be a 200
  local url=$1 out
  shift
  out=$(timeout $((seconds + 60)) hey -t 5 "$@" -m POST -T application/json \
    -H "X-Hub-Signature-256: $signature" -D "$work/body.json" "$url")
  if awk '/^ *\[[0-9]+\]/ && $1 != "[200]" {bad = 1} /^Error distribution/ {bad = 1} END {exit !bad}' <<<"$out"; then
    echo "hey saw non-200 answers or errors against $url:" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "$out"
}
rate() { awk '$1 == "Requests/sec:" {printf "%.0f", $2}'; }
pct() { awk -v p="$1%" '$1 == p && $2 == "in" {printf "%.3f", $3 * 1000}'; }

direct="http://127.0.0.1:$receiver_port/hook"
through="http://127.0.0.1:$proxy_port/webhooks/whatsapp"
# Warm both paths (connections, pools) before measuring.
run "$direct" -n 2000 -c 16 >/dev/null
run "$through" -n 2000 -c 16 >/dev/null

direct_rate=$(run "$direct" -z "${seconds}s" -c 16 | rate)
through_rate=$(run "$through" -z "${seconds}s" -c 16 | rate)
direct_fixed=$(run "$direct" -z "${seconds}s" -c 10 -q 100)
through_fixed=$(run "$through" -z "${seconds}s" -c 10 -q 100)
d50=$(pct 50 <<<"$direct_fixed")
d99=$(pct 99 <<<"$direct_fixed")
t50=$(pct 50 <<<"$through_fixed")
t99=$(pct 99 <<<"$through_fixed")
python3 - "$direct_rate" "$through_rate" "$d50" "$d99" "$t50" "$t99" <<'PY'
import sys
dr, tr, d50, d99, t50, t99 = map(float, sys.argv[1:])
print(f"full speed: direct {dr:.0f}/s, through wagate {tr:.0f}/s, ratio {tr / dr:.2f}")
print(f"at 1,000/s: direct p50 {d50:.2f} ms p99 {d99:.2f} ms; through wagate p50 {t50:.2f} ms p99 {t99:.2f} ms")
added = t99 - d99
print(f"added: p50 {t50 - d50:.2f} ms, p99 {added:.2f} ms (target < 1 ms: {'met' if added < 1 else 'NOT met'})")
PY
