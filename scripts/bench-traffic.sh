#!/usr/bin/env bash
# What traffic control costs on the cached-hit path, in one run.
#
# One origin (nginx serving a 1 KiB JSON file with Cache-Control) and one
# perfgate (release build) with four routes to the same file:
#   /plain/   no rate limit, no JWT                     (the reference)
#   /limited/ a local GCRA rule by client IP (never refusing: 10^9/s)
#   /jwt/     JWT required (HS256, one token reused: the validator's cache)
#   /both/    both
# and, when redis-server is installed, a second perfgate whose /limited/
# rule is shared through Redis (one Lua call per request).
# The runs alternate (plain, limited, jwt, both, repeated) so drift in a
# shared machine's load hits every variant alike; the ratios use the best
# of the repeats.
#
# Usage: scripts/bench-traffic.sh [seconds-per-run] [connections] [repeats]
# Needs nginx and wrk (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. scripts/bench/common.sh
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
secs=${1:-5}
conns=${2:-64}
repeats=${3:-2}

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
python3 - "$dir" <<'PY'
import json, sys, os
d = sys.argv[1]
items, i = [], 0
while len(json.dumps(items)) < 1024:
    items.append({"id": i, "name": "Event %d" % i, "venue": "Hall %d" % (i % 7)})
    i += 1
body = json.dumps(items)[:1024]
for sub in ("plain", "limited", "jwt", "both"):
    os.makedirs(os.path.join(d, "www", sub), exist_ok=True)
    open(os.path.join(d, "www", sub, "e1k.json"), "w").write(body)
PY
chmod -R a+rX "$dir"
nginx_origin "$dir" "$origin_port" "    root $dir/www;
    default_type application/json;
    location / { add_header Cache-Control \"public, max-age=3600\"; }"

secret=bench-secret-0123456789abcdef0123
printf '%s' "$secret" > "$dir/jwt.secret"
token=$(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"sub": "user-1", "exp": int(time.time()) + 3600}).encode())
s = b(hmac.new(sys.argv[1].encode(), (h + "." + p).encode(), hashlib.sha256).digest())
print(h + "." + p + "." + s)
PY
)

config() { # file redis_url
  cat > "$1" <<TOML
[server]
max_concurrent_requests = 0
[upstream]
url = "http://127.0.0.1:$origin_port"
[redis]
url = "$2"
[jwt]
secret_file = "$dir/jwt.secret"
algorithms = ["HS256"]
[[rate_limits]]
name = "per-ip"
key = "ip"
rate = 1000000000
per = "1s"
routes = ["limited", "both"]
[[routes]]
name = "plain"
path = "/plain"
[[routes]]
name = "limited"
path = "/limited"
[[routes]]
name = "jwt"
path = "/jwt"
jwt = "required"
[[routes]]
name = "both"
path = "/both"
jwt = "required"
TOML
}

start() { # config var: perfgate on config, every route answering, port in var
  start_perfgate "$1" /plain/e1k.json "$2"
  local r code
  for r in plain limited jwt both; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:${!2}/$r/e1k.json")
    [ "$code" = 200 ] || { echo "setup failed: /$r answered $code" >&2; cat "$1.log" >&2; exit 1; }
  done
}

config "$dir/local.toml" ""
start "$dir/local.toml" pg
shared=""
if command -v redis-server >/dev/null 2>&1; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$dir/redis.log" 2>&1 &
  redis_pid=$!
  sleep 0.3
  config "$dir/shared.toml" "redis://127.0.0.1:$rport"
  start "$dir/shared.toml" shared
fi

run() { # label url -> rps
  local out rps p99 errs
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -H "Authorization: Bearer $token" "$2")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '%-40s %12s %10s  %s\n' "$1" "$rps" "$p99" "$errs" >&2
  echo "$rps"
}
printf '\nwrk -t1 -c%s -d%ss, %s repeats, on %s cores (cached 1 KiB hits)\n' "$conns" "$secs" "$repeats" "$(nproc)" >&2
printf '%-40s %12s %10s\n' "variant" "req/s" "p99" >&2
declare -A best
for _ in $(seq "$repeats"); do
  for r in plain limited jwt both; do
    v=$(run "$r" "http://127.0.0.1:$pg/$r/e1k.json")
    best[$r]=$(python3 -c "print(max(float('${best[$r]:-0}'), float('$v')))")
  done
  if [ -n "$shared" ]; then
    v=$(run "limited, shared in Redis" "http://127.0.0.1:$shared/limited/e1k.json")
    best[shared]=$(python3 -c "print(max(float('${best[shared]:-0}'), float('$v')))")
  fi
done
python3 - "${best[plain]}" "${best[limited]}" "${best[jwt]}" "${best[both]}" "${best[shared]:-0}" <<'PY' >&2
import sys
plain, limited, jwt, both, shared = map(float, sys.argv[1:])
print("\nthroughput relative to no limit and no JWT (best of the repeats):")
print("  local rate limit        %.3f" % (limited / plain))
print("  JWT (HS256, cached)     %.3f" % (jwt / plain))
print("  both                    %.3f" % (both / plain))
if shared:
    print("  rate limit in Redis     %.3f" % (shared / plain))
PY
