#!/usr/bin/env bash
# Re-resolves the workspace and exports the pinned, hashed lock that installs use.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-.tools/bin/uv}"
"$UV" lock
"$UV" export --format requirements-txt --no-emit-workspace --all-groups --frozen -o requirements.lock >/dev/null
echo "requirements.lock updated"
