"""Only adapters import pygit2, kubernetes or torch; a local-only pass never loads the
kubernetes client (0.25 s and ~30 MB it has no use for)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLE, REPO_ROOT

PACKAGE = REPO_ROOT / "reconciler"
ALLOWED = {
    "pygit2": ("source/git.py", "source/proposals.py"),
    "kubernetes": ("kube/",),
    "torch": ("gauntlet/worker.py", "gauntlet/match.py", "gauntlet/weights.py",
              "gauntlet/games/"),
    "urllib3": ("kube/",),
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_heavy_libraries_are_imported_only_by_their_adapters() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        for library in _imports(path) & ALLOWED.keys():
            if not relative.startswith(ALLOWED[library]):
                offenders.append(f"{relative} imports {library}")
    assert offenders == []


def test_a_local_only_pass_does_not_load_the_kubernetes_client(tmp_path: Path) -> None:
    settings = tmp_path / "reconciler.yaml"
    settings.write_text(json.dumps({"repo": str(REPO_ROOT), "path": EXAMPLE.name,
                                    "stateDir": str(tmp_path / "state"), "listen": ""}))
    script = ("import sys, time; from reconciler.app import Wiring; "
              "from reconciler.passes import plan_pass; "
              "from reconciler.plan.planner import History; "
              "from reconciler.settings import load_settings; "
              f"plan_pass(Wiring(load_settings(__import__('pathlib').Path({str(settings)!r}), "
              "{})), History(), time.time()); print(sorted({m.split('.')[0] for m in "
              "sys.modules} & {'kubernetes', 'torch'}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO_ROOT, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
