#!/usr/bin/env bash
# Quick start, part two: lint, type-check and the test suite (not the real-cluster suite,
# which needs KUBECONFIG, the SPRT sweep, or the container images: `scripts/test.sh -m images`
# builds and runs them, docs/install.md). Extra arguments go to pytest; a -m replaces ours.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/host-tools.sh
.venv/bin/ruff check reconciler tests bench
.venv/bin/mypy reconciler
# Two workers, a test file each at a time (its module fixtures stay on one worker): most
# tests wait on daemons and servers, so this halves the wall time on 2 cores.
.venv/bin/python -m pytest -n 2 --dist loadfile -m "not kubeconfig and not sweep and not images" "$@"
