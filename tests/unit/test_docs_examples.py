"""The Kubernetes example in docs/kubernetes.md is a valid desired state."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLE, REPO_ROOT


def test_the_kubernetes_example_validates(tmp_path: Path) -> None:
    text = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    [block] = re.findall(r"## An example.*?```yaml\n(.*?)```", text, re.S)
    folder = tmp_path / "desired-state"
    (folder / "strategies").mkdir(parents=True)
    shutil.copy(EXAMPLE / "strategies" / "gepetto.py", folder / "strategies" / "gepetto.py")
    (folder / "fleet.yaml").write_text(block)
    done = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(folder)],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 targets, 1 strategies, 1 models" in done.stdout
