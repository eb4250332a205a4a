#!/usr/bin/env bash
# Quick start, part one: the example desired-state/ (this repository, branch main) planned
# against a local fleet under .state/fleet/. Exit 0 in sync, 2 changes pending, 1 error.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
set +e
.venv/bin/reconciler plan --config reconciler.yaml "$@"
status=$?
set -e
[ "$status" -eq 2 ] && exit 0  # changes pending is the expected state of a fresh fleet
exit "$status"
