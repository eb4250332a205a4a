"""Gated promotion end to end on CPU: real repository, real gauntlets, real pointer."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reconciler.app import Wiring
from reconciler.journal import Journal
from reconciler.passes import PassOutcome, run_pass
from reconciler.settings import load_settings
from tests.conftest import EXAMPLE, GIT_ENV, git

GOOD = EXAMPLE / "models" / "connect4-policy-v2.pt"
WEAK = EXAMPLE / "models" / "connect4-policy-weak.pt"


pytestmark = pytest.mark.slow  # whole gauntlets and daemons; fast tests cover each step


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Promotion:
    def __init__(self, tmp_path: Path) -> None:
        self.repo, self.state = tmp_path / "repo", tmp_path / "state"
        folder = self.repo / "desired-state"
        (folder / "models").mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        shutil.copy(GOOD, folder / "models")
        shutil.copy(WEAK, folder / "models")
        (folder / "targets.yaml").write_text(
            "apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: edge}\n"
            "spec: {local: {root: edge}}\n")
        gate = (EXAMPLE / "gauntlets" / "connect4-gate.yaml").read_text()
        (folder / "gate.yaml").write_text(gate.replace("device: auto", "device: cpu"))
        self.settings_file = tmp_path / "reconciler.yaml"
        self.settings_file.write_text(f"repo: {self.repo}\nstateDir: {self.state}\nlisten: ''\n"
                                      f"artifacts: {{fileRoots: ['{EXAMPLE / 'models'}']}}\n")

    def declare(self, artifact: Path, gated: bool = True) -> str:
        (self.repo / "desired-state" / "model.yaml").write_text(f"""apiVersion: reconciler/v1
kind: Model
metadata: {{name: policy}}
spec:
  targets: [edge]
  artifact: {{uri: models/{artifact.name}, sha256: {sha(artifact)}, format: torch}}
  pointer: {{path: models/canonical.pt}}
{"  gauntlet: connect4-gate" if gated else ""}
""")
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", f"declare {artifact.name}")
        return git(self.repo, "rev-parse", "HEAD")

    def apply(self) -> PassOutcome:
        settings = load_settings(self.settings_file, {})
        journal = Journal(settings.journal_path)
        try:
            return run_pass(Wiring(settings), journal, threading.Event())
        finally:
            journal.close()

    @property
    def pointer(self) -> Path:
        return self.state / "fleet" / "edge" / "models" / "canonical.pt"

    def canonical(self) -> str | None:
        return Path(os.readlink(self.pointer)).name if self.pointer.is_symlink() else None

    def gate_events(self) -> list[dict[str, object]]:
        journal = Journal(self.state / "journal.db")
        try:
            return [e.detail for e in journal.events("policy", 1000) if e.action == "gate"]
        finally:
            journal.close()


@pytest.fixture
def promotion(tmp_path: Path) -> Promotion:
    return Promotion(tmp_path)


def test_promotion_then_rejection_leaves_the_pointer_and_is_not_rerun(
        promotion: Promotion) -> None:
    promotion.declare(GOOD)
    first = promotion.apply()
    assert first.result == "changed", first.message
    assert promotion.canonical() == sha(GOOD)
    assert promotion.pointer.read_bytes() == GOOD.read_bytes()

    promotion.declare(WEAK)
    rejected = promotion.apply()
    assert rejected.result == "failed"
    assert "gate connect4-gate rejected" in rejected.message and "heuristic" in rejected.message
    assert promotion.canonical() == sha(GOOD), "a failed gate leaves the pointer untouched"
    again = promotion.apply()
    assert "(remembered)" in again.message
    assert [e["remembered"] for e in promotion.gate_events()] == [False, False, True]
    status = subprocess.run([sys.executable, "-m", "reconciler", "status", "--config",
                             str(promotion.settings_file)], capture_output=True, text=True,
                            check=True, env={**os.environ, **GIT_ENV}).stdout
    assert "GateFailed" in status


def test_revert_to_a_model_that_was_canonical_skips_the_gate(promotion: Promotion) -> None:
    promotion.declare(WEAK, gated=False)
    promotion.apply()
    assert promotion.canonical() == sha(WEAK)
    promotion.declare(GOOD)
    promotion.apply()
    assert promotion.canonical() == sha(GOOD)
    played = promotion.gate_events()[-1]["summary"]
    assert "previous:" in str(played) and "skipped" not in str(played).split("previous:")[1]
    git(promotion.repo, "revert", "--no-edit", "HEAD")
    reverted = promotion.apply()
    assert reverted.result == "changed"
    assert promotion.canonical() == sha(WEAK)
    assert len(promotion.gate_events()) == 1, "the revert ran no gauntlet"


def test_a_pr_check_makes_the_merge_flip_at_once(promotion: Promotion) -> None:
    promotion.declare(WEAK, gated=False)
    promotion.apply()
    git(promotion.repo, "checkout", "-q", "-b", "pr/new-policy")
    promotion.declare(GOOD)
    checked = subprocess.run(
        [sys.executable, "-m", "reconciler", "gauntlet", "policy", "--config",
         str(promotion.settings_file), "--rev", "pr/new-policy", "--artifact", f"file://{GOOD}"],
        capture_output=True, text=True, env={**os.environ, **GIT_ENV}, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"PASS  policy sha256:{sha(GOOD)}" in checked.stdout
    assert promotion.canonical() == sha(WEAK), "a check flips nothing"
    git(promotion.repo, "checkout", "-q", "main")
    git(promotion.repo, "merge", "-q", "--ff-only", "pr/new-policy")
    merged = promotion.apply()
    assert promotion.canonical() == sha(GOOD), merged.message
    assert promotion.gate_events()[-1]["remembered"] is True

    failing = subprocess.run(
        [sys.executable, "-m", "reconciler", "gauntlet", "policy", "--config",
         str(promotion.settings_file), "--artifact", f"file://{WEAK}", "--retry",
         "--rev", "pr/new-policy"],
        capture_output=True, text=True, env={**os.environ, **GIT_ENV}, check=False)
    assert failing.returncode == 1 and "FAIL" in failing.stdout
