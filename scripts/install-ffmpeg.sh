#!/usr/bin/env bash
# Installs Debian's ffmpeg (ffmpeg and ffprobe), which the media service and its tests need,
# when `ffprobe` is not on PATH. Idempotent: does nothing when ffprobe and ffmpeg are present.
#
#   scripts/install-ffmpeg.sh
#
# Needs root and apt-get (Debian/Ubuntu). Exits non-zero with the reason otherwise.
set -euo pipefail

say() { echo "install-ffmpeg.sh: $*" >&2; }

if command -v ffprobe >/dev/null 2>&1 && command -v ffmpeg >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "ffmpeg/ffprobe are missing and apt-get is not available: install ffmpeg with your package manager"
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  say "ffmpeg/ffprobe are missing; installing them needs root: run 'sudo apt-get install ffmpeg' (or this script as root)"
  exit 1
fi
say "installing Debian's ffmpeg with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
if ! command -v ffprobe >/dev/null 2>&1; then
  say "apt-get finished but ffprobe is still not on PATH"
  exit 1
fi
say "$(ffmpeg -hide_banner -version | head -n 1)"
