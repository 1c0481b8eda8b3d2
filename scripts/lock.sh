#!/usr/bin/env bash
# Re-resolves the workspace and exports the pinned, hashed lock that installs use.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-.tools/bin/uv}"
"$UV" lock
"$UV" export --format requirements-txt --no-emit-workspace --all-groups --frozen -o requirements.lock >/dev/null
# per-service runtime locks for the container images (no dev tools, only what the service needs)
for svc in services/*/; do
  name="switchboard-$(basename "$svc")"
  "$UV" export --format requirements-txt --package "$name" --no-dev --no-emit-workspace --frozen \
    -o "${svc}requirements.lock" >/dev/null
done
echo "requirements.lock and services/*/requirements.lock updated"
