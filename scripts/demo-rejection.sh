#!/usr/bin/env bash
# A real rejection, on CPU: in a scratch copy of this repository, declare the weak
# Connect Four policy (it beats random, not the heuristic) and run one pass. The gate
# rejects it with the evidence; the canonical pointer stays where it was. Nothing outside
# the scratch folder is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/host-tools.sh bwrap prlimit  # the gauntlet runs only in the sandbox
scratch=$(mktemp -d)
trap 'for r in "$scratch"/state/fleet/*/bin/runner.py; do [ -f "$r" ] && (cd "${r%/bin/runner.py}" && python3 bin/runner.py stop); done; rm -rf "$scratch"' EXIT
git clone -q . "$scratch/repo"
printf 'repo: %s\nstateDir: %s\nlisten: ""\n' "$scratch/repo" "$scratch/state" > "$scratch/reconciler.yaml"
reconciler() { .venv/bin/reconciler "$@" --config "$scratch/reconciler.yaml"; }
echo "== 1. the example as committed: v2 passes connect4-gate and becomes canonical on staging"
reconciler apply | grep -E "Model|@" || true
weak=$(sha256sum desired-state/models/connect4-policy-weak.pt | cut -d' ' -f1)
sed -i "s#uri: models/connect4-policy-v2.pt#uri: models/connect4-policy-weak.pt#; s#sha256: [0-9a-f]\{64\}#sha256: $weak#" \
  "$scratch/repo/desired-state/models/connect4.yaml"
git -C "$scratch/repo" -c user.name=demo -c user.email=demo@invalid commit -qam "declare the weak policy"
echo
echo "== 2. the weak policy: the gate rejects it, the pointer stays on v2"
reconciler apply | grep -E "Model|@" || true
echo
reconciler status | grep -E "KIND|Model"
echo
echo "canonical on staging: $(readlink "$scratch/state/fleet/staging/models/canonical_connect4.pt" | xargs basename)"
