#!/usr/bin/env bash
# Two perfgate builds side by side against the same nginx, in one run: the
# cached-hit and pass-through loads of scripts/bench.sh (1 KiB JSON,
# `Cache-Control: public, max-age=3600`, wrk 256 connections; 1 KiB
# `no-store`, wrk 64 connections), alternated over several rounds so that a
# noisy, shared machine affects both builds alike. Prints each round's
# requests per second, each build's ratio to nginx (proxy_cache for hits,
# proxy_pass for pass-through) and the new build's ratio to the old one.
#
# Usage: scripts/bench-ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECONDS]
#   e.g. scripts/bench-ab.sh /tmp/perfgate-90a555b target/release/perfgate 3 10
# Everything listens on 127.0.0.1 on free ports; all processes stop on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help|"") sed -n '2,/^# Everything/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
old=$1; new=$2; rounds=${3:-3}; secs=${4:-10}
# shellcheck source=bench/common.sh
. scripts/bench/common.sh
need nginx nginx; need wrk wrk
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

dir=$(mktemp -d); chmod 755 "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in origin.pid cache.pid pass.pid; do [ -f "$dir/$f" ] && kill "$(cat "$dir/$f")" 2>/dev/null || true; done
  sleep 0.3; rm -rf "$dir"
}
trap cleanup EXIT

origin_port=$(free_port); ngx_port=$(free_port); pass_port=$(free_port)
python3 -c 'import json,sys
items=[];i=0
while len(json.dumps(items))<1024:
    items.append({"id":i,"name":"Event %d"%i,"venue":"Hall %d"%(i%7),"seats":100+i}); i+=1
open(sys.argv[1]+"/e1k.json","w").write(json.dumps(items)[:1024])' "$dir"
mkdir -p "$dir/nocache" "$dir/ngx-cache"; cp "$dir/e1k.json" "$dir/nocache/e1k.json"; chmod -R a+rX "$dir"

conf() { # NAME PORT LOCATION_LINES [HTTP_LINES]
  cat > "$dir/$1.conf" <<NGX
worker_processes $([ "$1" = origin ] && echo 1 || echo auto);
worker_rlimit_nofile 65536;
pid $dir/$1.pid;
error_log $dir/$1-error.log;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$origin_port; keepalive 256; }
  ${4:-}
  server { listen 127.0.0.1:$2 backlog=4096; $3 }
}
NGX
  nginx -c "$dir/$1.conf"
}
conf origin "$origin_port" "root $dir; default_type application/json;
  location / { add_header Cache-Control \"public, max-age=3600\"; }
  location /nocache/ { add_header Cache-Control \"no-store\"; }"
conf cache "$ngx_port" 'location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_cache pc; proxy_cache_lock on; }' \
  "proxy_cache_path $dir/ngx-cache levels=1:2 keys_zone=pc:64m max_size=2g inactive=1h use_temp_path=off;"
conf pass "$pass_port" 'location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }'

start() { # BIN -> prints port
  local port admin; port=$(free_port); admin=$(free_port)
  PERFGATE_LOG=warn "$1" serve --upstream "http://127.0.0.1:$origin_port" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$dir/pg-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/e1k.json" && break; sleep 0.1; done
  old_or_new_port=$port
}
start "$old"; old_port=$old_or_new_port
start "$new"; new_port=$old_or_new_port
for p in "$ngx_port" "$pass_port" "$old_port" "$new_port"; do
  curl -sf -o /dev/null "http://127.0.0.1:$p/e1k.json" || { echo "server on $p did not answer" >&2; cat "$dir"/*.log >&2; exit 1; }
done

rps() { # URL CONNS -> requests/s
  wrk -t2 -c"$2" -d"${secs}s" --timeout 5s "$1" | awk '/^Requests\/sec/ {print $2}'
}
echo "round,load,nginx,old,new" > "$dir/ab.csv"
for p in "$ngx_port" "$old_port" "$new_port"; do wrk -t2 -c64 -d2s "http://127.0.0.1:$p/e1k.json" >/dev/null; done
wrk -t2 -c64 -d2s "http://127.0.0.1:$pass_port/nocache/e1k.json" >/dev/null
for r in $(seq "$rounds"); do
  # Alternate the order each round so neither build always runs first.
  if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  declare -A hit=() pass=()
  hit[nginx]=$(rps "http://127.0.0.1:$ngx_port/e1k.json" 256)
  pass[nginx]=$(rps "http://127.0.0.1:$pass_port/nocache/e1k.json" 64)
  for b in $order; do
    port_var="${b}_port"
    hit[$b]=$(rps "http://127.0.0.1:${!port_var}/e1k.json" 256)
    pass[$b]=$(rps "http://127.0.0.1:${!port_var}/nocache/e1k.json" 64)
  done
  echo "$r,hit,${hit[nginx]},${hit[old]},${hit[new]}" >> "$dir/ab.csv"
  echo "$r,pass,${pass[nginx]},${pass[old]},${pass[new]}" >> "$dir/ab.csv"
  echo "round $r done (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
done
python3 - "$dir/ab.csv" <<'PY'
import csv, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1])))
print("| round | load | nginx req/s | old req/s | new req/s | old/nginx | new/nginx | new/old |")
print("|---|---|---|---|---|---|---|---|")
agg = {}
for r in rows:
    n, o, w = float(r["nginx"]), float(r["old"]), float(r["new"])
    print(f"| {r['round']} | {r['load']} | {n:,.0f} | {o:,.0f} | {w:,.0f} | {o/n:.3f} | {w/n:.3f} | {w/o:.3f} |")
    agg.setdefault(r["load"], []).append(w / o)
for load, v in agg.items():
    print(f"\n{load}: new/old median {st.median(v):.3f} over {len(v)} rounds (min {min(v):.3f}, max {max(v):.3f})")
PY
