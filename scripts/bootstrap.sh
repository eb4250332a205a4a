#!/usr/bin/env bash
# Creates .venv with reconciler and its test and gauntlet extras. Idempotent: re-installs
# only when pyproject.toml changes. torch is installed first and pinned: an unpinned or
# ranged torch would download the newest CUDA build (several GB) instead of the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" -e '.[test,gauntlet]'
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
