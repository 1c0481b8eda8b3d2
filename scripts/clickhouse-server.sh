#!/usr/bin/env bash
# A private ClickHouse server for tests and local runs (Debian's clickhouse-server package, 18.16).
#
#   scripts/clickhouse-server.sh install                          install the package when missing
#   scripts/clickhouse-server.sh start DATA_DIR TCP_PORT HTTP_PORT  (installs when missing) start
#   scripts/clickhouse-server.sh stop DATA_DIR                    stop the instance of DATA_DIR
#
# `start` writes DATA_DIR/config.xml and DATA_DIR/users.xml (loopback only; user `default`
# without password, allowed from localhost only), runs clickhouse-server in the background,
# waits until it answers `SELECT 1` and prints its pid on stdout (diagnostics go to stderr).
# The server's own logs are in DATA_DIR/log/. Exit status is non-zero with the reason when the
# package cannot be installed or the server does not come up.
set -euo pipefail

SERVER_BIN="${CLICKHOUSE_SERVER_BIN:-}"
START_TIMEOUT="${CLICKHOUSE_START_TIMEOUT:-60}"

say() { echo "clickhouse-server.sh: $*" >&2; }
die() { say "$*"; exit 1; }

find_server() {
  if [ -n "$SERVER_BIN" ] && [ -x "$SERVER_BIN" ]; then echo "$SERVER_BIN"; return 0; fi
  for candidate in clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
    if command -v "$candidate" >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  return 1
}

install_server() {
  if find_server >/dev/null; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    die "clickhouse-server is not installed and installing it needs root (apt-get install clickhouse-server)"
  fi
  command -v apt-get >/dev/null 2>&1 || die "clickhouse-server is not installed and apt-get is not available"
  say "installing clickhouse-server with apt-get"
  # The package's maintainer scripts try to start the system service: forbid that (we run our own).
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
  fi
  local rc=0
  {
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        clickhouse-server clickhouse-client
  } >&2 || rc=$?
  [ "$created_policy" = 1 ] && rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get install clickhouse-server failed (exit $rc)"
  find_server >/dev/null || die "clickhouse-server still not found after installing the package"
}

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd); }

write_config() {
  local dir="$1" tcp="$2" http="$3"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  cat > "$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$tcp</tcp_port>
    <http_port>$http</http_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
EOF
  cat > "$dir/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

ping_server() {
  local tcp="$1" http="$2"
  # The HTTP interface answers "Ok." on /ping once the server accepts queries.
  if command -v curl >/dev/null 2>&1; then
    [ "$(curl -s --max-time 2 "http://127.0.0.1:$http/ping" 2>/dev/null)" = "Ok." ] || return 1
  elif command -v wget >/dev/null 2>&1; then
    [ "$(wget -qO- -T 2 "http://127.0.0.1:$http/ping" 2>/dev/null)" = "Ok." ] || return 1
  fi
  if command -v clickhouse-client >/dev/null 2>&1; then
    [ "$(clickhouse-client --host 127.0.0.1 --port "$tcp" -q 'SELECT 1' 2>/dev/null)" = 1 ] || return 1
  fi
  return 0
}

is_running() {
  local pidfile="$1"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

cmd_start() {
  [ $# -eq 3 ] || die "usage: $0 start DATA_DIR TCP_PORT HTTP_PORT"
  local dir tcp="$2" http="$3"
  [[ "$tcp" =~ ^[0-9]+$ && "$http" =~ ^[0-9]+$ ]] || die "ports must be numbers"
  dir="$(abs_dir "$1")"
  local pidfile="$dir/clickhouse-server.pid"
  if is_running "$pidfile"; then
    die "already running for $dir (pid $(cat "$pidfile")); stop it first"
  fi
  install_server
  local server
  server="$(find_server)"
  write_config "$dir" "$tcp" "$http"
  rm -f "$pidfile"
  # Own session, so that the caller's terminal signals do not reach it; stdout/stderr to a file.
  setsid "$server" --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" > "$pidfile"
  local deadline=$((SECONDS + START_TIMEOUT))
  until ping_server "$tcp" "$http"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      say "clickhouse-server exited during start-up; last log lines:"
      tail -n 20 "$dir/log/stdout.log" "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "clickhouse-server did not answer on 127.0.0.1:$http within ${START_TIMEOUT}s; stopping it"
      kill "$pid" 2>/dev/null || true
      tail -n 20 "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.2
  done
  echo "$pid"
}

cmd_stop() {
  [ $# -eq 1 ] || die "usage: $0 stop DATA_DIR"
  [ -d "$1" ] || { say "no such directory: $1"; return 0; }
  local dir
  dir="$(cd "$1" && pwd)"
  local pidfile="$dir/clickhouse-server.pid"
  if ! is_running "$pidfile"; then
    rm -f "$pidfile"
    say "not running ($dir)"
    return 0
  fi
  local pid
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  say "pid $pid did not stop after 10 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  install) install_server ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) die "usage: $0 {install | start DATA_DIR TCP_PORT HTTP_PORT | stop DATA_DIR}" ;;
esac
