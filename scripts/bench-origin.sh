#!/usr/bin/env bash
# perfgate vs the bare origin, in one run on this machine.
#
# Starts on loopback an origin (nginx serving a 1 KiB and a 64 KiB JSON file
# with Cache-Control, plus an uncacheable copy), perfgate (release build) in
# front of it, warms the cache, and runs the same wrk load against each:
#   - cached 1 KiB hit vs the origin serving the file itself
#   - cached 64 KiB hit with `Accept-Encoding: br` (a stored brotli variant)
#   - pass-through of an uncacheable response (no-store) vs the origin and vs
#     nginx proxy_pass in front of the same origin
# Prints requests/s, p50/p99 and perfgate's ratio to the origin.
#
# Usage: scripts/bench-origin.sh [seconds-per-run] [connections]
# Needs nginx and wrk (installed with apt-get when missing).
# The side-by-side comparison with nginx proxy_cache and Varnish is issue #4.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. scripts/bench/common.sh
secs=${1:-10}
conns=${2:-64}

need nginx nginx
need wrk wrk

cargo build --release -p perfgate >/dev/null 2>&1
dir=$(mktemp -d)
chmod 755 "$dir"   # nginx workers run as another user
cleanup() {
  [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  [ -f "$dir/proxy.pid" ] && kill "$(cat "$dir/proxy.pid")" 2>/dev/null || true
  [ -n "${pg_pid:-}" ] && kill "$pg_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

origin_port=$(free_port); pg_port=$(free_port); admin_port=$(free_port); px_port=$(free_port)

python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
def doc(n):
    items, i = [], 0
    while len(json.dumps(items)) < n:
        items.append({"id": i, "name": "Event %d" % i, "venue": "Hall %d" % (i % 7), "seats": 100 + i})
        i += 1
    return json.dumps(items)[:n]
open(d + "/e1k.json", "w").write(doc(1024))
open(d + "/e64k.json", "w").write(doc(65536))
PY
mkdir -p "$dir/nocache" && cp "$dir/e1k.json" "$dir/nocache/e1k.json"
chmod -R a+rX "$dir"
cat > "$dir/nginx.conf" <<NGX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$origin_port;
    root $dir;
    default_type application/json;
    location / { add_header Cache-Control "public, max-age=3600"; }
    location /nocache/ { add_header Cache-Control "no-store"; }
  }
}
NGX
nginx -c "$dir/nginx.conf"
# The reference for pass-through: nginx proxy_pass (keep-alive upstream, as
# many workers as perfgate has threads) in front of the same origin.
cat > "$dir/proxy.conf" <<NGX
worker_processes auto;
pid $dir/proxy.pid;
error_log $dir/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:$origin_port; keepalive 256; }
  server {
    listen 127.0.0.1:$px_port;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
nginx -c "$dir/proxy.conf"
PERFGATE_LOG=warn ./target/release/perfgate serve --upstream "http://127.0.0.1:$origin_port" \
  --listen "127.0.0.1:$pg_port" --admin-listen "127.0.0.1:$admin_port" >"$dir/perfgate.log" 2>&1 &
pg_pid=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$pg_port/e1k.json" && break; sleep 0.1; done
curl -s -o /dev/null "http://127.0.0.1:$pg_port/e64k.json" -H 'Accept-Encoding: br'
for path in e1k.json e64k.json nocache/e1k.json; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pg_port/$path")
  [ "$code" = 200 ] || { echo "setup failed: /$path answered $code" >&2; exit 1; }
done

run() { # label url [header]
  local out
  if [ -n "${3:-}" ]; then out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -H "$3" "$2"); else out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "$2"); fi
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '%-34s %12s %10s %10s  %s\n' "$1" "$rps" "$p50" "$p99" "$errs" >&2
  echo "$rps"
}
printf '\nwrk -t1 -c%s -d%ss on %s cores\n' "$conns" "$secs" "$(nproc)" >&2
printf '%-34s %12s %10s %10s\n' "target" "req/s" "p50" "p99" >&2
o1=$(run "origin 1 KiB (nginx static)" "http://127.0.0.1:$origin_port/e1k.json")
p1=$(run "perfgate 1 KiB hit" "http://127.0.0.1:$pg_port/e1k.json")
o64=$(run "origin 64 KiB br (nginx, no gzip)" "http://127.0.0.1:$origin_port/e64k.json" "Accept-Encoding: br")
p64=$(run "perfgate 64 KiB br hit" "http://127.0.0.1:$pg_port/e64k.json" "Accept-Encoding: br")
on=$(run "origin 1 KiB no-store" "http://127.0.0.1:$origin_port/nocache/e1k.json")
xn=$(run "nginx proxy_pass 1 KiB no-store" "http://127.0.0.1:$px_port/nocache/e1k.json")
pn=$(run "perfgate 1 KiB pass-through" "http://127.0.0.1:$pg_port/nocache/e1k.json")
br_size=$(curl -s -o /dev/null -w '%{size_download}' -H 'Accept-Encoding: br' "http://127.0.0.1:$pg_port/e64k.json")
python3 - "$o1" "$p1" "$o64" "$p64" "$on" "$pn" "$br_size" "$xn" <<'PY' >&2
import sys
o1, p1, o64, p64, on, pn, br, xn = map(float, sys.argv[1:])
print("\nratios (perfgate / origin):")
print("  1 KiB cached hit      %.2fx" % (p1 / o1))
print("  64 KiB brotli hit     %.2fx  (perfgate sends %d bytes instead of 65536: %.1f%%)" % (p64 / o64, br, 100 * br / 65536))
print("  pass-through (miss)   %.2fx of the origin, %.2fx of nginx proxy_pass" % (pn / on, pn / xn))
PY
curl -s "http://127.0.0.1:$admin_port/admin/cache/stats" >&2; echo >&2
