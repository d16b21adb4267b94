#!/usr/bin/env bash
# perfgate side by side with nginx proxy_cache and Varnish (issue #4).
#
# Starts on loopback, in a temp dir with ephemeral ports:
#   - origin: nginx (1 worker) serving 1 KiB and 64 KiB JSON files with
#     `Cache-Control: public, max-age=3600`, a `no-store` copy of the 1 KiB
#     file, /any/<path> (a cacheable 1 KiB JSON for every path) and /slow/
#     forwarded to a Python origin that sleeps 200 ms and counts requests per
#     path (scripts/bench/slow_origin.py, GET /count?path=...);
#   - nginx proxy_cache (worker_processes auto, keep-alive upstream,
#     proxy_cache_lock on, gzip on for application/json; a second listener
#     with `http2` for h2c);
#   - nginx proxy_pass without cache (the pass-through reference);
#   - Varnish (malloc 256m, HTTP/2 feature on; see the VCL below);
#   - perfgate (release build, default config).
# Warms each, then runs the same loads against each (scripts/bench/run.py):
# cached 1 KiB at 64/256/1,000 HTTP/1.1 connections and at 1,000 connections
# with a fixed 30,000 req/s (h2load --rps, open loop), cached 64 KiB with
# gzip/br requested, HTTP/2 (h2load), pass-through of no-store responses, a
# 1,000-request cold-key stampede; and fills a fresh perfgate with 100,000
# cached 1 KiB objects to measure memory per entry.
# Prints one markdown table, writes raw numbers to $BENCH_OUT (default
# target/bench.json) and renders docs/bench-plot.svg.
#
# Usage: scripts/bench.sh [--quick]    (~5.5 min plus the build; --quick: 3 s runs, ~2 min)
# Everything listens on 127.0.0.1, every load is bounded, all processes stop
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. scripts/bench/common.sh
quick=false
case "${1:-}" in
  --quick) quick=true ;;
  -h|--help) sed -n '2,/^# Usage/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac
out=${BENCH_OUT:-target/bench.json}
svg=${BENCH_SVG:-docs/bench-plot.svg}

# ---- tools
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v varnishd >/dev/null 2>&1 || missing+=(varnish)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages may start system services: stop them (ours run from the temp dir).
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for svc in varnish varnishncsa nginx; do
      systemctl stop "$svc" 2>/dev/null || true
      systemctl disable "$svc" 2>/dev/null || true
    done
  fi
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "building perfgate (release)" >&2
cargo build --release -p perfgate >/dev/null 2>&1
bin=$PWD/target/release/perfgate

dir=$(mktemp -d)
chmod 755 "$dir"   # nginx workers and varnish's child run as other users
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in origin.pid cache.pid pass.pid; do
    [ -f "$dir/$f" ] && kill "$(cat "$dir/$f")" 2>/dev/null || true
  done
  sleep 0.5
  rm -rf "$dir"
}
trap cleanup EXIT

origin_port=$(free_port); slow_port=$(free_port)
ngx_port=$(free_port); ngx_h2_port=$(free_port); pass_port=$(free_port)
vc_port=$(free_port); pg_port=$(free_port); pg_admin=$(free_port)
mem_port=$(free_port); mem_admin=$(free_port)

# ---- content
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
mkdir -p "$dir/nocache" "$dir/ngx-cache" && cp "$dir/e1k.json" "$dir/nocache/e1k.json"
chmod -R a+rX "$dir"
pad=$(python3 -c 'print("x" * 1004)')   # /any/ body: exactly 1,024 bytes

# ---- origin (nginx, 1 worker) and the slow origin (Python)
python3 scripts/bench/slow_origin.py "$slow_port" &
pids+=($!)
cat > "$dir/origin.conf" <<NGX
worker_processes 1;
worker_rlimit_nofile 65536;
pid $dir/origin.pid;
error_log $dir/origin-error.log;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;   # default 1000: nginx would close (GOAWAY) every 1,000 requests
  upstream slow { server 127.0.0.1:$slow_port; keepalive 64; }
  server {
    listen 127.0.0.1:$origin_port backlog=4096;
    root $dir;
    default_type application/json;
    location / { add_header Cache-Control "public, max-age=3600"; }
    location /nocache/ { add_header Cache-Control "no-store"; }
    location /any/ {
      add_header Cache-Control "public, max-age=3600";
      return 200 '{"ok":true,"pad":"$pad"}';
    }
    location /slow/ { proxy_pass http://slow; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
nginx -c "$dir/origin.conf"

# ---- nginx proxy_cache (and a proxy_pass-only twin as the pass-through reference)
cat > "$dir/cache.conf" <<NGX
worker_processes auto;
worker_rlimit_nofile 65536;
pid $dir/cache.pid;
error_log $dir/cache-error.log;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;   # default 1000: nginx would close (GOAWAY) every 1,000 requests
  proxy_cache_path $dir/ngx-cache levels=1:2 keys_zone=pc:64m max_size=2g inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$origin_port; keepalive 256; }
  gzip on;
  gzip_types application/json;
  server {
    listen 127.0.0.1:$ngx_port backlog=4096;
    listen 127.0.0.1:$ngx_h2_port http2 backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache pc;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 10s;
      # Used only when the upstream sends no Cache-Control/Expires: nginx
      # honors the upstream headers first (no proxy_ignore_headers).
      proxy_cache_valid 200 10m;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
NGX
nginx -c "$dir/cache.conf"
cat > "$dir/pass.conf" <<NGX
worker_processes auto;
worker_rlimit_nofile 65536;
pid $dir/pass.pid;
error_log $dir/pass-error.log;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;   # default 1000: nginx would close (GOAWAY) every 1,000 requests
  upstream origin { server 127.0.0.1:$origin_port; keepalive 256; }
  server {
    listen 127.0.0.1:$pass_port backlog=4096;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
nginx -c "$dir/pass.conf"

# ---- Varnish: the builtin VCL plus one line. Varnish stores what the
# backend sends and does not compress by default (http_gzip_support only
# handles Accept-Encoding and gunzips for clients that do not accept gzip);
# since the origin sends identity, large JSON is gzipped once on fetch
# (beresp.do_gzip), the usual Varnish setup and the same work perfgate does.
cat > "$dir/default.vcl" <<VCL
vcl 4.1;
import std;
backend default { .host = "127.0.0.1"; .port = "$origin_port"; }
sub vcl_backend_response {
  if (beresp.http.Content-Type ~ "json" && std.integer(beresp.http.Content-Length, 0) >= 4096) {
    set beresp.do_gzip = true;
  }
}
VCL
chmod a+r "$dir/default.vcl"
varnishd -F -a "127.0.0.1:$vc_port" -f "$dir/default.vcl" -s malloc,256m -n "$dir/varnish" \
  -p feature=+http2 -p listen_depth=4096 >"$dir/varnish.log" 2>&1 &
vc_pid=$!
pids+=($vc_pid)

# ---- perfgate
PERFGATE_LOG=warn "$bin" serve --upstream "http://127.0.0.1:$origin_port" \
  --listen "127.0.0.1:$pg_port" --admin-listen "127.0.0.1:$pg_admin" >"$dir/perfgate.log" 2>&1 &
pg_pid=$!
pids+=($pg_pid)

for p in "$pg_port" "$vc_port" "$ngx_port" "$pass_port" "$slow_port"; do
  ok=false
  for _ in $(seq 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$p/e1k.json"; then ok=true; break; fi
    sleep 0.1
  done
  $ok || { echo "server on port $p did not start" >&2; cat "$dir"/*.log >&2; exit 1; }
done

versions=$(python3 - "$bin" <<'PY'
import json, subprocess, sys
def v(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
print(json.dumps({"nginx": v(["nginx", "-v"]), "varnish": v(["varnishd", "-V"]),
                  "wrk": v(["wrk", "-v"]), "h2load": v(["h2load", "--version"]),
                  "perfgate": v(["git", "rev-parse", "--short", "HEAD"]) + " (+ working tree)",
                  "cpu": v(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"])}))
PY
)
cat > "$dir/run.json" <<JSON
{"quick": $quick, "dir": "$dir", "perfgate_bin": "$bin",
 "origin_port": $origin_port, "slow_port": $slow_port, "mem_port": $mem_port, "mem_admin_port": $mem_admin,
 "versions": $versions,
 "servers": {
  "perfgate": {"port": $pg_port, "pid": $pg_pid},
  "nginx": {"port": $ngx_port, "h2_port": $ngx_h2_port, "pidfile": "$dir/cache.pid"},
  "varnish": {"port": $vc_port, "pid": $vc_pid},
  "nginx_pass": {"port": $pass_port, "pidfile": "$dir/pass.pid"}
 }}
JSON
echo "running the loads ($([ "$quick" = true ] && echo '3 s' || echo '10 s') per wrk run, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
python3 scripts/bench/run.py "$dir/run.json" "$out"
python3 scripts/bench/report.py "$out" "$svg"
