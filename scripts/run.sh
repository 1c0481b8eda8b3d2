#!/usr/bin/env bash
# Starts the whole platform locally: nats-server (JetStream, file storage under the data
# folder), every service and the gateway, under honcho. Ctrl-C stops everything.
# With telephony (when `python scripts/asterisk.py check` passes: Linux, root; and SB_TELEPHONY
# is not `off`) also Asterisk, in the Debian root under .cache/asterisk (built here first, about
# a minute the first time), and the call-flow service (Procfile.telephony).
# Settings: SB_DATA_DIR (default ./data), SB_GATEWAY_HTTP_PORT (8000), SB_NATS_PORT (4222),
# SB_TELEPHONY (off: without Asterisk), SB_ASTERISK_SIP_PORT (5060), SB_ASTERISK_TLS_PORT (5061),
# SB_ASTERISK_ARI_PORT (8088), SB_ASTERISK_AMI_PORT (5038), SB_CALLFLOW_HTTP_PORT (8104),
# SB_ASTERISK_SIP_BIND (127.0.0.1), SB_ASTERISK_EXTERNAL_ADDRESS (behind NAT).
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

# Telephony: Asterisk and the call-flow service, when this machine can run Asterisk.
PROCFILE="$ROOT/Procfile"
telephony_off=""
if [ "${SB_TELEPHONY:-}" = off ]; then
  telephony_off="SB_TELEPHONY=off"
elif ! check="$(python scripts/asterisk.py check)"; then
  telephony_off="${check#asterisk: }"
elif ! python scripts/asterisk.py build; then
  telephony_off="the Asterisk root could not be built (see above)"
fi
if [ -n "$telephony_off" ]; then
  echo "run: telephony is off: $telephony_off"
  export SB_TELEPHONY=off
else
  export SB_TELEPHONY=on
  export SB_ASTERISK_SIP_PORT="${SB_ASTERISK_SIP_PORT:-5060}"
  export SB_ASTERISK_TLS_PORT="${SB_ASTERISK_TLS_PORT:-5061}"
  export SB_ASTERISK_ARI_PORT="${SB_ASTERISK_ARI_PORT:-8088}"
  export SB_ASTERISK_AMI_PORT="${SB_ASTERISK_AMI_PORT:-5038}"
  export SB_ASTERISK_ARI_PASSWORD="${SB_ASTERISK_ARI_PASSWORD:-$(secret_file asterisk_ari_password 'import secrets; print(secrets.token_urlsafe(24))')}"
  export SB_ASTERISK_AMI_PASSWORD="${SB_ASTERISK_AMI_PASSWORD:-$(secret_file asterisk_ami_password 'import secrets; print(secrets.token_urlsafe(24))')}"
  export SB_CALLFLOW_HTTP_PORT="${SB_CALLFLOW_HTTP_PORT:-8104}"
  export SB_CALLFLOW_NATS_URL="$NATS_URL"
  # scripts/asterisk.py's instance "local": ARI and AMI on loopback, user and app "switchboard".
  export SB_CALLFLOW_ARI_URL="http://127.0.0.1:$SB_ASTERISK_ARI_PORT"
  export SB_CALLFLOW_ARI_PASSWORD="$SB_ASTERISK_ARI_PASSWORD"
  export SB_CALLFLOW_AMI_HOST=127.0.0.1 SB_CALLFLOW_AMI_PORT="$SB_ASTERISK_AMI_PORT"
  export SB_CALLFLOW_AMI_PASSWORD="$SB_ASTERISK_AMI_PASSWORD"
  # Sound files the call-flow service fetches for Asterisk: a folder inside the root, as the
  # host sees it and as Asterisk (chrooted) sees it.
  export SB_CALLFLOW_SOUNDS_DIR="${SB_ASTERISK_ROOT:-$ROOT/.cache/asterisk/root}/srv/switchboard/local/sounds"
  export SB_CALLFLOW_ASTERISK_SOUNDS_DIR=/srv/switchboard/local/sounds
  mkdir -p "$SB_CALLFLOW_SOUNDS_DIR"
  # call recordings: Asterisk's recording spool of the instance
  export SB_CALLFLOW_RECORDINGS_DIR="${SB_ASTERISK_ROOT:-$ROOT/.cache/asterisk/root}/srv/switchboard/local/state/spool/recording"
  # honcho reads one Procfile: the platform's and the telephony processes together.
  PROCFILE="$SB_DATA_DIR/Procfile"
  cat "$ROOT/Procfile" "$ROOT/Procfile.telephony" > "$PROCFILE"
fi

exec honcho start -f "$PROCFILE" -d "$ROOT"
