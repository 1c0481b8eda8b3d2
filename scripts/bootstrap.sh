#!/usr/bin/env bash
# Installs what the platform and its tests need: a virtualenv with the locked packages
# (requirements.lock, exported from the uv workspace) and the workspace packages in editable
# mode. Idempotent and quick when nothing changed. Sourced by scripts/run.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: Python 3.11+ is required" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "bootstrap: $PY is older than 3.11" >&2; exit 1; }

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: apt-get install $*"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "bootstrap: please install: $* (needs root and apt-get)" >&2
    exit 1
  fi
}

if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install python3-venv
fi

if [ ! -x .tools/bin/uv ]; then
  echo "bootstrap: installing uv into .tools/"
  "$PY" -m venv .tools
  .tools/bin/pip install -q --disable-pip-version-check uv
fi
UV="$ROOT/.tools/bin/uv"

if [ ! -x .venv/bin/python ]; then
  "$UV" venv -q -p "$PY" .venv
fi

stamp=".venv/.switchboard-installed"
want="$(cat requirements.lock contracts/pyproject.toml services/*/pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing locked packages into .venv/"
  "$UV" pip sync -q -p .venv/bin/python requirements.lock
  editable=(-e contracts)
  for svc in services/*/; do
    [ -f "$svc/pyproject.toml" ] && editable+=(-e "${svc%/}")
  done
  "$UV" pip install -q -p .venv/bin/python --no-deps "${editable[@]}"
  echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
