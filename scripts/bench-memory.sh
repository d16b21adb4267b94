#!/usr/bin/env bash
# Memory bound of the L1 cache (issue #11, item 7): RSS stays within
# cache.max_bytes + 64 MiB however many distinct keys are requested.
#
# Starts on loopback an nginx origin answering every path with a small JSON
# body and no caching headers, and perfgate (release build) in front of it
# with cache.max_bytes = MAX_BYTES (default 64MiB) and one route giving every
# response default_ttl = 10m. Then wrk sends REQUESTS (default 400,000) GETs,
# each with a distinct ~7 KB query string, so every request is a miss that
# stores a new key (key, headers and body all weighed). Samples perfgate's
# RSS every second, and prints the peak (VmHWM), the final RSS, the L1's own
# count (entries, bytes) and whether the peak stayed within max_bytes + 64 MiB.
#
# Usage: scripts/bench-memory.sh   (REQUESTS=…, MAX_BYTES_MIB=…, PERFGATE_BIN=… to change)
# Needs nginx and wrk (installed with apt-get when missing). Everything
# listens on 127.0.0.1, the load is bounded, all processes stop on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. scripts/bench/common.sh
case "${1:-}" in
  -h|--help) sed -n '2,/^# Usage/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
requests=${REQUESTS:-400000}
max_mib=${MAX_BYTES_MIB:-64}
threads=2
conns=16

need nginx nginx
need wrk wrk

# PERFGATE_BIN runs another build (e.g. an older commit's) instead.
if [ -n "${PERFGATE_BIN:-}" ]; then
  bin=$PERFGATE_BIN
else
  cargo build --release -p perfgate >/dev/null 2>&1
  bin="${CARGO_TARGET_DIR:-target}/release/perfgate"
fi

dir=$(mktemp -d)
chmod 755 "$dir"   # nginx workers run as another user
pids=()
cleanup() {
  [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

origin_port=$(free_port); pg_port=$(free_port); admin_port=$(free_port)
nginx_origin "$dir" "$origin_port" '
    large_client_header_buffers 4 32k;
    location / {
      default_type application/json;
      return 200 "{\"ok\":true,\"note\":\"a small body without caching headers\"}";
    }'

cat > "$dir/perfgate.toml" <<TOML
[upstream]
url = "http://127.0.0.1:$origin_port"

[server]
max_uri_bytes = "16KiB"
max_header_bytes = "32KiB"

[cache]
max_bytes = "${max_mib}MiB"

[[routes]]
name = "items"
path = "/"
cache = { default_ttl = "10m" }
TOML

PERFGATE_LOG=warn "$bin" serve -c "$dir/perfgate.toml" --listen "127.0.0.1:$pg_port" \
  --admin-listen "127.0.0.1:$admin_port" >"$dir/perfgate.log" 2>&1 &
pg_pid=$!
pids+=("$pg_pid")
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$pg_port/ready" && break; sleep 0.1; done
rss_kib() { awk "/^$1:/ {print \$2}" "/proc/$pg_pid/status"; }
echo "perfgate started: RSS $(( $(rss_kib VmRSS) / 1024 )) MiB, cache.max_bytes ${max_mib} MiB"

# ~7 KB of query string before the distinct counter.
pad=$(head -c 7000 /dev/zero | tr '\0' 'x')
(
  while kill -0 "$pg_pid" 2>/dev/null; do
    echo "$(date +%s) $(rss_kib VmRSS)" >> "$dir/rss.log"
    sleep 1
  done
) &
pids+=($!)

misses() {
  curl -s "http://127.0.0.1:$admin_port/admin/cache/stats" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["misses"])' 2>/dev/null || echo 0
}
start=$(date +%s)
# wrk runs for its whole -d even once every thread has stopped, so it is
# interrupted (it then prints its summary) as soon as perfgate has counted
# every request; the 30 min -d only bounds a stuck run.
PATH_PREFIX="/items?pad=$pad&id=" PATHS_MAX=$requests WRK_THREADS=$threads \
  wrk -t$threads -c$conns -d1800s -s scripts/bench/paths.lua \
  "http://127.0.0.1:$pg_port/" > "$dir/wrk.txt" &
wrk_pid=$!
pids+=("$wrk_pid")
while kill -0 "$wrk_pid" 2>/dev/null && [ "$(misses)" -lt "$requests" ]; do sleep 1; done
kill -INT "$wrk_pid" 2>/dev/null || true
wait "$wrk_pid" || true
took=$(( $(date +%s) - start ))

stats=$(curl -s "http://127.0.0.1:$admin_port/admin/cache/stats")
peak=$(( $(rss_kib VmHWM) / 1024 ))
final=$(( $(rss_kib VmRSS) / 1024 ))
limit=$(( max_mib + 64 ))
sent=$(misses)
non2xx=$(awk '/Non-2xx/ {print $NF}' "$dir/wrk.txt")
echo "requests counted by perfgate (all misses): $sent in ${took}s (non-2xx: ${non2xx:-0}), distinct keys: $requests"
echo "origin of the keys: ~7,000-byte query strings; body ~60 B; default_ttl 10m"
echo "cache stats: $(echo "$stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("data", d); print({k: d[k] for k in d if k in ("entries","bytes","max_bytes","stored","misses")})' 2>/dev/null || echo "$stats")"
echo "RSS: peak ${peak} MiB, final ${final} MiB; bound max_bytes + 64 MiB = ${limit} MiB"
if [ "$peak" -le "$limit" ]; then
  echo "PASS: peak RSS within cache.max_bytes + 64 MiB"
else
  echo "FAIL: peak RSS above cache.max_bytes + 64 MiB"
  exit 1
fi
