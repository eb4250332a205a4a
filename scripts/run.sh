#!/usr/bin/env bash
# Quick start, part one: the daemon on the example. It follows this repository's
# desired-state/ on branch main and converges a local fleet under .state/fleet/: a real
# service (the example's runner) starts on staging; production waits for staging's soak.
# Ctrl-C stops the daemon and the example's services.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/host-tools.sh bwrap prlimit  # repository code runs only in the sandbox
stop_services() {
  for runner in .state/fleet/*/bin/runner.py; do
    [ -f "$runner" ] && (cd "${runner%/bin/runner.py}" && python3 bin/runner.py stop) || true
  done
}
trap stop_services EXIT
cat <<'HINT'
reconciler: following desired-state/ on main; fleet in .state/fleet/
  in another shell:  .venv/bin/reconciler status    .venv/bin/reconciler history gepetto
                     curl -s 127.0.0.1:9464/metrics | grep ^reconciler_
  commit a change to desired-state/ and watch it converge; Ctrl-C to stop
HINT
.venv/bin/reconciler run --config reconciler.yaml "$@"
