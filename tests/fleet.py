"""A small fleet in a real repository: one local target, one strategy whose health check
reads what was delivered, one model without a gauntlet (so pointer flips are exercised)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from reconciler.app import Wiring
from reconciler.execute.executor import Hooks
from reconciler.journal import Journal
from reconciler.passes import PassOutcome, run_pass
from reconciler.settings import Settings, load_settings
from tests.conftest import git

HEALTHY = "OK = 'serving'\n"
# The health check reads what was delivered: content starting with OK is healthy.
HEALTH = "import sys; sys.exit(0 if open('app/app.py').read().startswith('OK') else 1)"
RESTART = "import pathlib; p = pathlib.Path('restarts'); p.write_text(p.read_text() + 'x' " \
          "if p.exists() else 'x')"
MODEL_HEALTH = "import sys; sys.exit(0 if open('models/current.bin').read() != 'bad' else 1)"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Fleet:
    """A repository declaring one local target, one strategy and one model."""

    def __init__(self, tmp_path: Path) -> None:
        self.repo = tmp_path / "repo"
        self.state = tmp_path / "state"
        (self.repo / "desired-state" / "models").mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        self.settings_file = tmp_path / "reconciler.yaml"
        self.settings_file.write_text(f"repo: {self.repo}\nstateDir: {self.state}\nlisten: ''\n")
        self.write("targets.yaml", "apiVersion: reconciler/v1\nkind: Target\nmetadata: "
                   "{name: edge}\nspec:\n  local: {root: edge}\n")
        self.strategy(HEALTHY)
        self.model(b"weights-v1")
        self.commit("initial fleet")

    @property
    def root(self) -> Path:
        return self.state / "fleet" / "edge"

    def write(self, relative: str, content: str | bytes) -> None:
        path = self.repo / "desired-state" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    def strategy(self, source: str, *, restart: str = f"[python3, -c, \"{RESTART}\"]",
                 health: str = f"command: [python3, -c, \"{HEALTH}\"]",
                 extra: str = "", restart_timeout: str = "10s",
                 health_timeout: str = "2s") -> None:
        self.write("app.py", source)
        self.write("app.yaml", f"""apiVersion: reconciler/v1
kind: Strategy
metadata: {{name: app}}
spec:
  source: app.py
  targets: [edge]
  deliver: {{path: app/app.py, mode: "0640"}}
  restart: {{command: {restart}, timeout: {restart_timeout}}}
  health: {{{health}, timeout: {health_timeout}}}
{extra}""")

    def model(self, artifact: bytes, declared: str | None = None,
              health_timeout: str = "2s") -> None:
        self.write("models/policy.bin", artifact)
        self.write("model.yaml", f"""apiVersion: reconciler/v1
kind: Model
metadata: {{name: policy}}
spec:
  targets: [edge]
  artifact: {{uri: models/policy.bin, sha256: {declared or sha(artifact)}, format: file}}
  pointer: {{path: models/current.bin}}
  restart: {{command: [python3, -c, "{RESTART}"]}}
  health: {{command: [python3, -c, "{MODEL_HEALTH}"], timeout: {health_timeout}}}
""")

    def gate(self, command: list[str]) -> None:
        """Put the model behind a metrics gauntlet ``gate`` running ``command`` (its last
        line: JSON metrics; accuracy must reach 0.9)."""
        model = self.repo / "desired-state" / "model.yaml"
        if "gauntlet: gate" not in model.read_text():
            self.write("model.yaml", model.read_text().replace(
                "  pointer:", "  gauntlet: gate\n  pointer:"))
        self.write("gate.yaml", json.dumps({
            "apiVersion": "reconciler/v1", "kind": "Gauntlet", "metadata": {"name": "gate"},
            "spec": {"metrics": {"command": command, "runs": 1,
                                 "rules": [{"metric": "accuracy", "op": ">=", "value": 0.9}]},
                     "timeout": "1m"}}))

    def commit(self, message: str) -> str:
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", message)
        return git(self.repo, "rev-parse", "HEAD")

    def settings(self) -> Settings:
        return load_settings(self.settings_file, {})

    def apply(self, hooks: Hooks | None = None) -> PassOutcome:
        journal = Journal(self.settings().journal_path)
        try:
            return run_pass(Wiring(self.settings()), journal, threading.Event(), hooks=hooks)
        finally:
            journal.close()

    def journal(self) -> Journal:
        return Journal(self.settings().journal_path)

    def results(self, outcome: PassOutcome) -> dict[str, str]:
        assert outcome.report is not None
        return {f"{r.action.kind}/{r.action.name}": r.result for r in outcome.report.results}


