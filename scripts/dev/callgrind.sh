#!/usr/bin/env bash
# Instructions per request of one perfgate build, by callgrind: an nginx
# origin on 127.0.0.1:18081 (1000-byte body; `/e1k.json` cacheable for an
# hour, `/nocache/e1k.json` no-store), perfgate under valgrind on :18080,
# 2,000 warm-up requests, then 10,000 measured (h2load --h1 -c16).
#
# Usage: scripts/dev/callgrind.sh BIN TAG [PATH]
#   e.g. scripts/dev/callgrind.sh target/release/perfgate hit /e1k.json
# Output: /tmp/cg/cg.TAG.out.1; instructions per request =
#   `callgrind_annotate /tmp/cg/cg.TAG.out.1 | grep TOTALS` ÷ 10,000.
# Needs valgrind, nginx and h2load (nghttp2-client).
set -euo pipefail
BIN=$(realpath "$1"); TAG=$2; P=${3:-/e1k.json}
mkdir -p /tmp/cg && cd /tmp/cg
mkdir -p root/nocache; python3 -c 'print("x"*1000)' > root/e1k.json; cp root/e1k.json root/nocache/e1k.json
cat > o.conf <<NGX
worker_processes 1; pid /tmp/cg/o.pid; error_log /tmp/cg/o.err; daemon on;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18081; root /tmp/cg/root; default_type application/json;
 location / { add_header Cache-Control "public, max-age=3600"; }
 location /nocache/ { add_header Cache-Control "no-store"; } } }
NGX
if [ -f o.pid ]; then kill "$(cat o.pid)" 2>/dev/null || true; fi; sleep 0.2; nginx -c /tmp/cg/o.conf
PERFGATE_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg/cg.$TAG.out $BIN serve --upstream http://127.0.0.1:18081 --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:18090 > /tmp/cg/pg.$TAG.log 2>&1 &
PID=$!
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18080$P && break; sleep 0.3; done
h2load --h1 -c16 -n2000 http://127.0.0.1:18080$P > /dev/null
callgrind_control -i on $PID > /dev/null
h2load --h1 -c16 -n10000 http://127.0.0.1:18080$P | grep -E "^requests:"
callgrind_control -i off $PID > /dev/null
callgrind_control -d $PID > /dev/null
sleep 1; kill $PID; wait $PID 2>/dev/null || true
kill $(cat o.pid)
