#!/usr/bin/env bash
# A real Prometheus scrapes a real perfgate, and promtool lints what it sees.
#
#   1. starts a tiny origin (Python) and `perfgate serve` on ephemeral ports,
#      with the admin token in PERFGATE_ADMIN_TOKEN;
#   2. sends traffic that gives every family samples: a miss, a hit, a pass,
#      a 404 from the origin, a 503 (an upstream error) and a 405 perfgate
#      answers itself;
#   3. runs `promtool check metrics` on perfgate's /metrics as a plain client
#      gets it (Prometheus text format 0.0.4), and checks that the
#      OpenMetrics variant ends with `# EOF`;
#   4. starts `prometheus` (temporary config and data directory, ephemeral
#      port) scraping the admin /metrics every second with the bearer token,
#      and asks its HTTP API for `up{job="perfgate"}` and perfgate series.
#
# Everything it starts is stopped on exit. Needs `prometheus`, `promtool`
# (Debian package `prometheus`; scripts/test.sh installs it) and `python3`.
# Without them the check is skipped — except under CI=1 or
# PERFGATE_REQUIRE_PROMETHEUS=1, where that is a failure (CI must run it).
#
# Usage: scripts/prometheus-scrape.sh     (PERFGATE_BIN to use another binary)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for b in prometheus promtool python3; do
  command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ -n "${CI:-}" ] || [ -n "${PERFGATE_REQUIRE_PROMETHEUS:-}" ]; then
    echo "FAILED: ${missing[*]} not installed; CI must run the Prometheus check (scripts/test.sh installs the prometheus package)" >&2
    exit 1
  fi
  echo "SKIPPED: ${missing[*]} not installed (scripts/test.sh installs the prometheus package)"
  exit 0
fi

bin="${PERFGATE_BIN:-${CARGO_TARGET_DIR:-target}/debug/perfgate}"
if [ ! -x "$bin" ]; then
  cargo build -q -p perfgate --locked
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAILED: $*" >&2
  for log in "$tmp"/*.log; do
    [ -s "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
  done
  exit 1
}

# HTTP without curl (CI machines have Python): prints the body; the status
# goes to $tmp/status. `get URL [ACCEPT]` is a client's request (no
# credentials: those would make it uncacheable); `admin_get` sends the token.
get() {
  python3 - "$1" "${2:-}" "${auth:-}" "$tmp/status" <<'EOF'
import sys, urllib.request, urllib.error
url, accept, token, status_file = sys.argv[1:5]
req = urllib.request.Request(url)
if token:
    req.add_header("Authorization", "Bearer " + token)
if accept:
    req.add_header("Accept", accept)
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except OSError as e:
    status, body = 0, str(e).encode()
open(status_file, "w").write(str(status))
sys.stdout.write(body.decode("utf-8", "replace"))
EOF
}
admin_get() { auth="$token" get "$@"; }
status() { cat "$tmp/status"; }

# A port that was free a moment ago (the same race as test-support's
# free_port: perfgate and Prometheus say so in their logs if it is lost).
port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 20 s for a command to succeed.
until_ok() {
  local what="$1"; shift
  for _ in $(seq 200); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "timed out waiting for $what"
}

started=$(date +%s)
token="scrape-$RANDOM$RANDOM"
printf '%s' "$token" >"$tmp/token"

# The origin: cacheable, uncacheable, missing and failing paths.
cat >"$tmp/origin.py" <<'EOF'
import http.server, sys

class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        status, cache = {
            "/cached": (200, "max-age=60"),
            "/missing": (404, "no-store"),
            "/fail": (503, "no-store"),
        }.get(self.path, (200, "no-store"))
        body = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
EOF
python3 "$tmp/origin.py" "$tmp/origin.port" 2>"$tmp/origin.log" &
pids+=($!)
until_ok "the origin" test -s "$tmp/origin.port"
origin="http://127.0.0.1:$(cat "$tmp/origin.port")"

proxy="127.0.0.1:$(port)"
admin="127.0.0.1:$(port)"
PERFGATE_ADMIN_TOKEN="$token" PERFGATE_LOG=warn "$bin" serve \
  --upstream "$origin" --listen "$proxy" --admin-listen "$admin" \
  >/dev/null 2>"$tmp/perfgate.log" &
pids+=($!)
until_ok "perfgate's admin /health" python3 -c "import urllib.request; urllib.request.urlopen('http://$admin/health', timeout=1)"

for path in /cached /cached /uncached /missing /fail; do
  get "http://$proxy$path" >/dev/null
done
[ "$(status)" = 503 ] || fail "/fail answered $(status), expected 503"
python3 - "$proxy" <<'EOF'
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], timeout=5)
c.request("TRACE", "/")
assert c.getresponse().status == 405
EOF

# promtool lints what a plain client gets (text format 0.0.4).
admin_get "http://$admin/metrics" >"$tmp/metrics.txt"
[ "$(status)" = 200 ] || fail "/metrics answered $(status)"
promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.log" 2>&1 ||
  fail "promtool check metrics: $(cat "$tmp/promtool.log")"
for series in 'perfgate_requests_total{' 'perfgate_cache_requests_total{' \
  'perfgate_request_duration_seconds_bucket{' 'perfgate_upstream_errors_total{' \
  'perfgate_client_connections ' 'process_cpu_seconds_total ' 'process_resident_memory_bytes '; do
  grep -qF "$series" "$tmp/metrics.txt" || fail "/metrics has no $series"
done
admin_get "http://$admin/metrics" "application/openmetrics-text;version=1.0.0" >"$tmp/metrics.om"
[ "$(tail -n 1 "$tmp/metrics.om")" = "# EOF" ] || fail "the OpenMetrics exposition does not end with # EOF"

prom="127.0.0.1:$(port)"
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: perfgate
    metrics_path: /metrics
    authorization:
      credentials_file: $tmp/token
    static_configs:
      - targets: ["$admin"]
EOF
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="$prom" --log.level=warn >/dev/null 2>"$tmp/prometheus.log" &
pids+=($!)

# The value of a one-sample instant query, or nothing.
query() {
  python3 - "http://$prom/api/v1/query" "$1" <<'EOF'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "?" + urllib.parse.urlencode({"query": sys.argv[2]})
try:
    with urllib.request.urlopen(url, timeout=2) as r:
        result = json.load(r)["data"]["result"]
except OSError:
    sys.exit(1)
if len(result) != 1:
    sys.exit(1)
print(result[0]["value"][1])
EOF
}
scraped() { [ "$(query 'up{job="perfgate"}')" = 1 ]; }
until_ok 'up{job="perfgate"} == 1' scraped

# The five GETs (the 405 is answered by the guard, before a route is chosen,
# and is not a route's request).
requests="$(query 'sum(perfgate_requests_total{job="perfgate"})')"
[ "${requests:-0}" -ge 5 ] 2>/dev/null || fail "perfgate_requests_total summed to '${requests}', expected at least 5"
for q in 'process_resident_memory_bytes{job="perfgate"} > 0' \
  'sum(perfgate_request_duration_seconds_count{job="perfgate",status_class="2xx"})' \
  'sum(perfgate_cache_requests_total{job="perfgate",result="hit"})'; do
  [ -n "$(query "$q")" ] || fail "Prometheus has no sample for $q"
done

echo "prometheus scrape: up=1, $requests requests seen, promtool clean ($(($(date +%s) - started)) s)"
