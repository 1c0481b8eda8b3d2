#!/usr/bin/env bash
# Runs the whole test suite: lint (ruff), types (mypy), the AsyncAPI drift check, the Asterisk
# root (scripts/asterisk.py build, when this machine can run it), then pytest (unit tests and
# integration tests against real servers the fixtures start on free ports).
# Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$ROOT/scripts/install-ffmpeg.sh"  # the media tests convert audio with Debian's ffmpeg
# the Asterisk image's entrypoint makes its TLS certificate with openssl; its test runs it
command -v openssl >/dev/null 2>&1 || apt_install openssl

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy contracts/src services/*/src scripts bench
echo "== asyncapi drift"
python scripts/gen_asyncapi.py --check
echo "== asterisk"
# The telephony tests run Asterisk from the Debian root under .cache/asterisk (about a minute
# to build the first time) and fail without it; `check` says why where it cannot run.
if python scripts/asterisk.py check; then
  python scripts/asterisk.py build
fi
echo "== pytest"
pytest "$@"
