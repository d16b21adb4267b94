#!/usr/bin/env bash
# Enqueue throughput and status-lookup latency of the async job queue, on
# the embedded store and (when redis-server is installed) on Redis Streams.
#
# One origin (nginx answering every POST with a small JSON), one perfgate
# (release build) with an async route whose workers are held back by a
# quota of 1 call/s, so the run measures accepting jobs, not doing them:
#   enqueue: wrk POSTs a distinct JSON body per request (202 expected),
#            de-duplication on (every body is hashed and looked up);
#   status:  wrk GETs the status URL of one job, with 16 connections
#            (throughput) and with 2 (latency).
#
# Usage: scripts/bench-jobs.sh [seconds-per-run] [connections]
# Needs nginx and wrk (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. scripts/bench/common.sh
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
secs=${1:-10}
conns=${2:-64}

need nginx nginx
need wrk wrk

cargo build --release -p perfgate >/dev/null 2>&1
dir=$(mktemp -d)
chmod 755 "$dir"
pids=()
cleanup() {
  [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

origin_port=$(free_port)
nginx_origin "$dir" "$origin_port" \
  "    location / { default_type application/json; return 200 '{\"ok\":true}'; }"

config() { # file backend redis_url
  cat > "$1" <<TOML
[server]
max_concurrent_requests = 0
[upstream]
url = "http://127.0.0.1:$origin_port"
[redis]
url = "$3"
key_prefix = "bench-jobs-$$"
[jobs]
backend = "$2"
data_dir = "$dir/data-$2"
max_queued = 100000000
[[routes]]
name = "analyze"
path = "/api/v1/analyze/async"
[routes.async]
status_path = "/api/v1/analyze/status"
concurrency = 1
rate = 1
rate_per = "1s"
dedup = "url"
TOML
}

bench() { # label port
  local port=$2 out rps p50 p99 status_url
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/bench/submit.lua \
    "http://127.0.0.1:$port/api/v1/analyze/async")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%-10s enqueue  %10s jobs/s  p50 %8s  p99 %8s  %s\n' "$1" "$rps" "$p50" "$p99" \
    "$(grep -E 'not-202|Socket errors' <<<"$out" | tr '\n' ' ')"
  status_url=$(curl -s -X POST -H 'Content-Type: application/json' \
    -d '{"url":"https://example.com/status-probe"}' \
    "http://127.0.0.1:$port/api/v1/analyze/async" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status_url"])')
  for c in 16 2; do
    out=$(wrk -t1 -c"$c" -d"${secs}s" --latency "http://127.0.0.1:$port$status_url")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    printf '%-10s status   %10s req/s   p50 %8s  p99 %8s  (%s connections)\n' "$1" "$rps" "$p50" "$p99" "$c"
  done
}

printf 'wrk %ss per run, %s connections (enqueue), %s cores\n' "$secs" "$conns" "$(nproc)"
config "$dir/embedded.toml" embedded ""
start_perfgate "$dir/embedded.toml" / port
bench embedded "$port"
if command -v redis-server >/dev/null 2>&1; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$dir/redis.log" 2>&1 &
  redis_pid=$!
  sleep 0.3
  config "$dir/redis.toml" redis "redis://127.0.0.1:$rport"
  start_perfgate "$dir/redis.toml" / port
  bench redis "$port"
fi
