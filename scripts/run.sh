#!/usr/bin/env bash
# Starts the whole platform locally: nats-server (JetStream, file storage under the data
# folder), every service and the gateway, under honcho. Ctrl-C stops everything.
# Settings: SB_DATA_DIR (default ./data), SB_GATEWAY_HTTP_PORT (8000), SB_NATS_PORT (4222).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$ROOT/scripts/install-ffmpeg.sh"  # the media service converts audio with Debian's ffmpeg

export SB_DATA_DIR="${SB_DATA_DIR:-$ROOT/data}"
mkdir -p "$SB_DATA_DIR"
chmod 700 "$SB_DATA_DIR"

secret_file() {  # keep generated secrets with the data, so a restart keeps working
  local file="$SB_DATA_DIR/$1"
  if [ ! -s "$file" ]; then (umask 077; python -c "$2" > "$file"); fi
  cat "$file"
}
export SB_GATEWAY_OPERATOR_KEY="${SB_GATEWAY_OPERATOR_KEY:-$(secret_file operator_key 'import secrets; print("op_" + secrets.token_urlsafe(32))')}"
export SB_CONFIG_SECRET_KEY="${SB_CONFIG_SECRET_KEY:-$(secret_file config_secret_key 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')}"

export SB_NATS_PORT="${SB_NATS_PORT:-4222}"
export SB_NATS_MONITOR_PORT="${SB_NATS_MONITOR_PORT:-8222}"
export SB_CONFIG_HTTP_PORT="${SB_CONFIG_HTTP_PORT:-8101}"
export SB_GATEWAY_HTTP_PORT="${SB_GATEWAY_HTTP_PORT:-8000}"
export SB_CDR_HTTP_PORT="${SB_CDR_HTTP_PORT:-8102}"
export SB_CDR_CHDB_PATH="${SB_CDR_CHDB_PATH:-$SB_DATA_DIR/cdr}"
export SB_MEDIA_HTTP_PORT="${SB_MEDIA_HTTP_PORT:-8103}"
export SB_S3_PORT="${SB_S3_PORT:-8333}"
export SB_MEDIA_S3_ENDPOINT="127.0.0.1:$SB_S3_PORT"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-switchboard}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-$(secret_file s3_secret_key 'import secrets; print(secrets.token_urlsafe(24))')}"
export SB_MEDIA_S3_ACCESS_KEY="$AWS_ACCESS_KEY_ID" SB_MEDIA_S3_SECRET_KEY="$AWS_SECRET_ACCESS_KEY"
NATS_URL="nats://127.0.0.1:$SB_NATS_PORT"
export SB_CONFIG_NATS_URL="$NATS_URL" SB_GATEWAY_NATS_URL="$NATS_URL" SB_CDR_NATS_URL="$NATS_URL" SB_MEDIA_NATS_URL="$NATS_URL"
export PYTHONUNBUFFERED=1

exec honcho start -f "$ROOT/Procfile" -d "$ROOT"
