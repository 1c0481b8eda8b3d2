#!/bin/sh
# Entrypoint of the Switchboard Asterisk image (deploy/asterisk/Dockerfile): renders the
# configuration templates (deploy/asterisk/etc, %%{name} placeholders, the same ones
# scripts/asterisk.py fills for local runs) from SB_ASTERISK_* variables, makes a self-signed
# TLS certificate when none is given, then runs Asterisk in the foreground.
#
#   switchboard-asterisk [ASTERISK OPTIONS...]   render, then exec asterisk -f -n -C ... OPTIONS
#   switchboard-asterisk render DIR              only render the templates into DIR (checks)
#
# Plain sh and sed (the image has no Python). Variables (defaults in brackets):
#   SB_ASTERISK_ARI_PASSWORD, SB_ASTERISK_AMI_PASSWORD  required; the call-flow service's
#                                  SB_CALLFLOW_ARI_PASSWORD / SB_CALLFLOW_AMI_PASSWORD
#   SB_ASTERISK_ARI_USER, SB_ASTERISK_AMI_USER [switchboard]
#   SB_ASTERISK_ARI_APP [switchboard]   the Stasis application (SB_CALLFLOW_ARI_APP)
#   SB_ASTERISK_BIND_ADDRESS [127.0.0.1]  ARI (HTTP) and AMI; 0.0.0.0 when the call-flow service
#                                  runs in another container (AMI then accepts any address)
#   SB_ASTERISK_ARI_PORT [8088], SB_ASTERISK_AMI_PORT [5038]
#   SB_ASTERISK_SIP_BIND [0.0.0.0], SB_ASTERISK_SIP_PORT [5060] (UDP and TCP),
#   SB_ASTERISK_TLS_PORT [5061]
#   SB_ASTERISK_TLS_CERT, SB_ASTERISK_TLS_KEY  a mounted certificate and key (PEM); when they are
#                                  not both there, a self-signed pair is made once under
#                                  $SB_ASTERISK_HOME/keys
#   SB_ASTERISK_EXTERNAL_ADDRESS   the public address phones reach (behind NAT): Asterisk puts it
#                                  into SIP and SDP for every peer outside SB_ASTERISK_LOCAL_NET
#   SB_ASTERISK_LOCAL_NET [127.0.0.0/8]  networks (space or comma separated) reached directly
#   SB_ASTERISK_RTP_START [10000], SB_ASTERISK_RTP_END [20000]  the media (RTP, UDP) ports
#   SB_ASTERISK_LANGUAGE [ru]      the default language of the prompts
#   SB_ASTERISK_HOME [/var/lib/switchboard/asterisk]  rendered etc/, state/ (astdb, spool, run,
#                                  log) and keys/: writable (a volume or an emptyDir)
#   SB_ASTERISK_TEMPLATES [/usr/share/switchboard/asterisk/etc]
set -eu

say() { echo "switchboard-asterisk: $*" >&2; }
die() { say "$*"; exit 1; }

HOME_DIR="${SB_ASTERISK_HOME:-/var/lib/switchboard/asterisk}"
TEMPLATES="${SB_ASTERISK_TEMPLATES:-/usr/share/switchboard/asterisk/etc}"
BIND_ADDRESS="${SB_ASTERISK_BIND_ADDRESS:-127.0.0.1}"
TLS_CERT="${SB_ASTERISK_TLS_CERT:-$HOME_DIR/keys/sip.crt}"
TLS_KEY="${SB_ASTERISK_TLS_KEY:-$HOME_DIR/keys/sip.key}"

# The transport lines for an Asterisk behind NAT (as nat_options in scripts/asterisk.py).
nat_options() {
  [ -n "${SB_ASTERISK_EXTERNAL_ADDRESS:-}" ] || return 0
  echo "external_media_address = $SB_ASTERISK_EXTERNAL_ADDRESS"
  echo "external_signaling_address = $SB_ASTERISK_EXTERNAL_ADDRESS"
  for net in $(echo "${SB_ASTERISK_LOCAL_NET:-127.0.0.0/8}" | tr ',' ' '); do
    echo "local_net = $net"
  done
}

ami_permit() {
  if [ -n "${SB_ASTERISK_AMI_PERMIT:-}" ]; then
    echo "$SB_ASTERISK_AMI_PERMIT"
  elif [ "$BIND_ADDRESS" = 127.0.0.1 ]; then
    echo 127.0.0.1/255.255.255.255
  else
    echo 0.0.0.0/0.0.0.0
  fi
}

# A value as the replacement of a sed s|||: \, & and | escaped; a value of several lines keeps
# them (each line but the last ends with a backslash).
sed_value() {
  printf '%s\n' "$1" | sed -e 's/[\\&|]/\\&/g' -e '$!s/$/\\/'
}

# One s||| command per placeholder, every one of them: a template may use any.
sed_script() {
  while [ $# -ge 2 ]; do
    printf 's|%%%%{%s}|%s|g\n' "$1" "$(sed_value "$2")"
    shift 2
  done
}

render() (  # render OUT_DIR (a subshell: the umask stays here)
  umask 077  # the sed script and the files hold the ARI and AMI passwords
  out="$1"
  [ -n "${SB_ASTERISK_ARI_PASSWORD:-}" ] || die "SB_ASTERISK_ARI_PASSWORD is not set"
  [ -n "${SB_ASTERISK_AMI_PASSWORD:-}" ] || die "SB_ASTERISK_AMI_PASSWORD is not set"
  [ -d "$TEMPLATES" ] || die "no templates in $TEMPLATES"
  mkdir -p "$out"
  script="$out/.render.sed"
  sed_script \
    etc_dir "$HOME_DIR/etc" \
    state_dir "$HOME_DIR/state" \
    language "${SB_ASTERISK_LANGUAGE:-ru}" \
    bind_address "$BIND_ADDRESS" \
    sip_bind "${SB_ASTERISK_SIP_BIND:-0.0.0.0}" \
    ari_port "${SB_ASTERISK_ARI_PORT:-8088}" \
    ari_user "${SB_ASTERISK_ARI_USER:-switchboard}" \
    ari_password "$SB_ASTERISK_ARI_PASSWORD" \
    ami_port "${SB_ASTERISK_AMI_PORT:-5038}" \
    ami_user "${SB_ASTERISK_AMI_USER:-switchboard}" \
    ami_password "$SB_ASTERISK_AMI_PASSWORD" \
    ami_permit "$(ami_permit)" \
    sip_port "${SB_ASTERISK_SIP_PORT:-5060}" \
    tls_port "${SB_ASTERISK_TLS_PORT:-5061}" \
    tls_cert "$TLS_CERT" \
    tls_key "$TLS_KEY" \
    nat_options "$(nat_options)" \
    rtp_start "${SB_ASTERISK_RTP_START:-10000}" \
    rtp_end "${SB_ASTERISK_RTP_END:-20000}" \
    app "${SB_ASTERISK_ARI_APP:-switchboard}" \
    > "$script"
  for template in "$TEMPLATES"/*.conf; do
    sed -f "$script" "$template" > "$out/$(basename "$template")"
  done
  rm -f "$script"
  # A placeholder nobody filled would reach Asterisk as text: stop here instead.
  if left="$(grep -o '%%{[a-z_]*}' "$out"/*.conf)"; then
    die "placeholders without a value: $(echo "$left" | sort -u | tr '\n' ' ')"
  fi
)

certificate() {
  if [ -s "$TLS_CERT" ] && [ -s "$TLS_KEY" ]; then
    return 0
  fi
  TLS_CERT="$HOME_DIR/keys/sip.crt"
  TLS_KEY="$HOME_DIR/keys/sip.key"
  [ -s "$TLS_CERT" ] && [ -s "$TLS_KEY" ] && return 0
  name="${SB_ASTERISK_EXTERNAL_ADDRESS:-localhost}"
  case "$name" in
    *:*) alt="IP:$name" ;;
    *[!0-9.]*) alt="DNS:$name" ;;
    *) alt="IP:$name" ;;
  esac
  say "no TLS certificate given: making a self-signed one for $name in $HOME_DIR/keys"
  mkdir -p "$HOME_DIR/keys"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
      -subj "/CN=$name" -addext "subjectAltName=$alt" \
      -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null
  ) || die "openssl could not make a certificate"
}

if [ "${1:-}" = render ]; then
  [ $# -eq 2 ] || die "usage: $0 render DIR"
  render "$2"
  exit 0
fi

mkdir -p "$HOME_DIR/state/spool" "$HOME_DIR/state/run" "$HOME_DIR/state/log" "$HOME_DIR/state/keys"
certificate
render "$HOME_DIR/etc"
say "SIP ${SB_ASTERISK_SIP_BIND:-0.0.0.0}:${SB_ASTERISK_SIP_PORT:-5060} (udp, tcp), TLS ${SB_ASTERISK_TLS_PORT:-5061}; ARI ${BIND_ADDRESS}:${SB_ASTERISK_ARI_PORT:-8088}, AMI ${SB_ASTERISK_AMI_PORT:-5038}; RTP ${SB_ASTERISK_RTP_START:-10000}-${SB_ASTERISK_RTP_END:-20000}${SB_ASTERISK_EXTERNAL_ADDRESS:+; external address $SB_ASTERISK_EXTERNAL_ADDRESS}"
exec asterisk -f -n -C "$HOME_DIR/etc/asterisk.conf" "$@"
