#!/usr/bin/env bash
# The shared cache, measured: L2 hit latency against a real Redis, and the
# invalidation fan-out delay between two perfgate instances.
#
# Starts on loopback: redis-server, an origin (nginx answering any path with
# a small cacheable JSON), and two perfgate instances A and B sharing Redis.
#   1. wrk through A over N distinct keys (misses: origin fetch, stored in L1 + L2);
#   2. wrk through B over the same keys once each: every request is an L2 hit
#      (B's L1 is empty), promoted to B's L1;
#   3. wrk through B over the same keys again: L1 hits (the reference);
#   4. fan-out: 50 times, cache a key on A and B, invalidate it through A's
#      admin API, and time until B stops answering it from its L1.
# All requests carry `Host: api.example`, as behind a load balancer: the host is
# part of the cache key, so instances share entries only for the same host.
# Usage: scripts/bench-l2.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. scripts/bench/common.sh
secs=${1:-5}
conns=${2:-16}

need nginx nginx
need wrk wrk
need redis-server redis-server

cargo build --release -p perfgate >/dev/null 2>&1
dir=$(mktemp -d)
chmod 755 "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
redis_port=$(free_port); origin_port=$(free_port)
a_port=$(free_port); a_admin=$(free_port); b_port=$(free_port); b_admin=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null 2>&1 &
pids+=($!)
pad=$(python3 -c 'print("x" * 900)')
cat > "$dir/nginx.conf" <<NGX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$origin_port;
    location / {
      default_type application/json;
      add_header Cache-Control "public, max-age=600";
      return 200 '{"ok":true,"pad":"$pad"}';
    }
  }
}
NGX
nginx -c "$dir/nginx.conf"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
start_pg() { # port admin
  PERFGATE_LOG=warn ./target/release/perfgate serve --upstream "http://127.0.0.1:$origin_port" \
    --listen "127.0.0.1:$1" --admin-listen "127.0.0.1:$2" --redis "redis://127.0.0.1:$redis_port" \
    >"$dir/pg-$1.log" 2>&1 &
  pids+=($!)
}
start_pg "$a_port" "$a_admin"
start_pg "$b_port" "$b_admin"
for p in "$a_port" "$b_port"; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$p/ready" && break; sleep 0.1; done
done
# Wait until both are connected to Redis.
for p in "$a_admin" "$b_admin"; do
  for _ in $(seq 50); do curl -s "http://127.0.0.1:$p/health/dependencies" | grep -q '"pass"' && break; sleep 0.1; done
done

cat > "$dir/keys.lua" <<'LUA'
local counter = 0
local max = tonumber(os.getenv("KEYS_MAX") or "0")
request = function()
  counter = counter + 1
  return wrk.format("GET", "/k/" .. counter)
end
response = function()
  if max > 0 and counter >= max then wrk.thread:stop() end
end
LUA
summary() { # label output
  local rps p50 p99 n
  n=$(awk '/requests in/ {print $1}' <<<"$2")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$2")
  p50=$(awk '$1=="50%" {print $2}' <<<"$2")
  p99=$(awk '$1=="99%" {print $2}' <<<"$2")
  printf '%-40s %9s %12s %10s %10s\n' "$1" "$n" "$rps" "$p50" "$p99" >&2
}
printf '\nwrk -t1 -c%s, %s cores\n%-40s %9s %12s %10s %10s\n' "$conns" "$(nproc)" "phase" "requests" "req/s" "p50" "p99" >&2
out=$(wrk -H "Host: api.example" -t1 -c"$conns" -d"${secs}s" --latency -s "$dir/keys.lua" "http://127.0.0.1:$a_port")
summary "A: misses (origin, then stored L1+L2)" "$out"
n=$(awk '/requests in/ {print $1}' <<<"$out")
sleep 1   # let the background L2 writes finish
out=$(KEYS_MAX=$((n * 9 / 10)) wrk -H "Host: api.example" -t1 -c"$conns" -d"$((secs * 3))s" --latency -s "$dir/keys.lua" "http://127.0.0.1:$b_port")
summary "B: L2 hits (promoted to L1)" "$out"
out=$(KEYS_MAX=$((n * 9 / 10)) wrk -H "Host: api.example" -t1 -c"$conns" -d"$((secs * 3))s" --latency -s "$dir/keys.lua" "http://127.0.0.1:$b_port")
summary "B: same keys again, L1 hits" "$out"
echo >&2
curl -s "http://127.0.0.1:$b_admin/admin/cache/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print("B stats: l2", d["layers"]["l2"])' >&2

python3 - "$a_port" "$a_admin" "$b_port" <<'PY' >&2
import http.client, json, statistics, sys, time
a, a_admin, b = (int(x) for x in sys.argv[1:])
def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", path, headers={"Host": "api.example"})
    r = c.getresponse(); r.read(); c.close(); return r.getheader("cache-status", "")
delays = []
for i in range(50):
    path = "/fanout/%d" % i
    get(a, path); get(b, path)
    assert get(b, path) == "perfgate; hit"
    c = http.client.HTTPConnection("127.0.0.1", a_admin)
    c.request("POST", "/admin/cache/invalidate", json.dumps({"urls": ["http://api.example" + path]}), {"content-type": "application/json"})
    r = c.getresponse(); r.read(); t0 = time.perf_counter()
    while get(b, path) == "perfgate; hit":
        if time.perf_counter() - t0 > 2: break
    delays.append((time.perf_counter() - t0) * 1000)
delays.sort()
print("fan-out delay A→B (invalidation answered by A → B stops serving it), 50 runs: "
      "p50 %.2f ms, p90 %.2f ms, max %.2f ms" % (statistics.median(delays), delays[44], delays[-1]))
PY
