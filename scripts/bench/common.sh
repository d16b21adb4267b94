# Helpers shared by the benchmark scripts (sourced, not run).

# need COMMAND PACKAGE: installs the Debian package when the command is missing.
need() {
  command -v "$1" >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  }
}

# free_port: an ephemeral TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_perfgate CONFIG READY_PATH VAR: starts the release perfgate on CONFIG
# (log in CONFIG.log) on free ports, records its pid in the caller's `pids`
# array (so the caller's cleanup stops it), waits until READY_PATH answers on
# the proxy port and stores that port in VAR. Not to be called in $(...):
# a subshell would lose the pid and leave perfgate running.
start_perfgate() {
  # Locals are prefixed so that VAR may be any name the caller uses.
  local _sp_config=$1 _sp_ready=$2 _sp_port _sp_admin
  _sp_port=$(free_port); _sp_admin=$(free_port)
  PERFGATE_LOG=warn ./target/release/perfgate serve -c "$_sp_config" --listen "127.0.0.1:$_sp_port" \
    --admin-listen "127.0.0.1:$_sp_admin" >"$_sp_config.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$_sp_port$_sp_ready" && break; sleep 0.1; done
  printf -v "$3" '%s' "$_sp_port"
}

# nginx_origin DIR PORT SERVER_LINES: starts nginx (one worker, no access
# log, pid and error log in DIR) with one server on 127.0.0.1:PORT holding
# SERVER_LINES; the caller's cleanup stops it through DIR/nginx.pid.
nginx_origin() {
  cat > "$1/nginx.conf" <<NGX
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$2;
$3
  }
}
NGX
  nginx -c "$1/nginx.conf"
}
