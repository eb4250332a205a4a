"""Waves on local targets through ``reconciler apply`` as a real subprocess: a canary, a
second wave, the rest. A failure in the second wave takes the revision back from the
canary and the second wave and never reaches the rest; a kill -9 during that recall
converges when the next pass runs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from reconciler.app import Wiring
from reconciler.events import Event, EventType
from reconciler.execute.executor import Hooks
from reconciler.journal import Journal
from reconciler.passes import run_pass
from reconciler.settings import load_settings
from tests.conftest import GIT_ENV, git

V1, V2, V3 = "VERSION = 'v1'\n", "VERSION = 'v2'\n", "VERSION = 'v3'\n"
# Run in the target's root. A target with a ``refuses`` file fails v2's health check; one
# with a ``block`` file hangs in the restart of v1 (only a recall restarts v1 there).
RESTART = """import os, pathlib, sys, time
here = pathlib.Path('.')
if (here / 'block').exists() and 'v1' in (here / 'app.py').read_text():
    (here / 'restarting').write_text(str(os.getpid()))
    time.sleep(120)
with open('restarts', 'a') as log:
    log.write((here / 'app.py').read_text())
"""
HEALTH = """import pathlib, sys
here = pathlib.Path('.')
sys.exit(1 if (here / 'refuses').exists() and 'v2' in (here / 'app.py').read_text() else 0)
"""
FLEET = ("canary", "s1", "s2", "r1", "r2")


def target_doc(name: str, after: str | None) -> str:
    return (f"apiVersion: reconciler/v1\nkind: Target\nmetadata: {{name: {name}}}\nspec:\n"
            f"  local: {{root: {name}}}\n" + (f"  after: {after}\n" if after else ""))


class Waves:
    """A repository whose Strategy goes to ``targets`` (name -> its ``after``)."""

    def __init__(self, tmp_path: Path, targets: dict[str, str | None]) -> None:
        self.repo, self.state, self.tmp = tmp_path / "repo", tmp_path / "state", tmp_path
        (self.repo / "desired-state").mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        (tmp_path / "restart.py").write_text(RESTART)
        (tmp_path / "health.py").write_text(HEALTH)
        self.settings = tmp_path / "reconciler.yaml"
        self.settings.write_text(f"repo: {self.repo}\nstateDir: {self.state}\nlisten: ''\n")
        self.write("targets.yaml", "---\n".join(target_doc(name, after)
                                                for name, after in targets.items()))
        self.release(V1, tuple(targets))

    def write(self, relative: str, content: str) -> None:
        (self.repo / "desired-state" / relative).write_text(content)

    def release(self, source: str, targets: tuple[str, ...]) -> str:
        self.write("app.py", source)
        self.write("app.yaml", f"""apiVersion: reconciler/v1
kind: Strategy
metadata: {{name: app}}
spec:
  source: app.py
  targets: [{', '.join(targets)}]
  deliver: {{path: app.py}}
  restart: {{command: [{sys.executable}, {self.tmp / 'restart.py'}], timeout: 10s}}
  health: {{command: [{sys.executable}, {self.tmp / 'health.py'}], timeout: 10s}}
""")
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", f"release {source.strip()}")
        return "main@sha1:" + git(self.repo, "rev-parse", "HEAD")

    def root(self, name: str) -> Path:
        return self.state / "fleet" / name

    def content(self, name: str) -> str | None:
        path = self.root(name) / "app.py"
        return path.read_text() if path.exists() else None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", *args, "--config",
                               str(self.settings)], capture_output=True, text=True,
                              timeout=120, env={**os.environ, **GIT_ENV}, check=False)

    def apply_until_settled(self, passes: int = 6) -> list[str]:
        """``reconciler apply`` until a pass changes nothing; each pass's output."""
        outputs = []
        for _ in range(passes):
            done = self.cli("apply")
            outputs.append(done.stdout + done.stderr)
            if "applied" not in done.stdout and "rolled-back" not in done.stdout:
                return outputs
        raise AssertionError("\n".join(outputs))

    def journal(self) -> Journal:
        return Journal(self.state / "journal.db", readonly=True)


def waves_fleet(tmp_path: Path) -> Waves:
    """canary; s1 and s2 after it; r1 and r2 after all of s1 and s2."""
    wave = "{targets: [s1, s2], healthy: all}"
    fleet = Waves(tmp_path, {"canary": None, "s1": "canary", "s2": "canary", "r1": wave,
                             "r2": wave})
    fleet.apply_until_settled()
    assert {name: fleet.content(name) for name in FLEET} == dict.fromkeys(FLEET, V1)
    return fleet


def test_a_failing_second_wave_recalls_the_canary_and_the_second_wave_and_holds_the_rest(
        tmp_path: Path) -> None:
    fleet = waves_fleet(tmp_path)
    (fleet.root("s2") / "refuses").write_text("")
    rest_before = {name: (fleet.root(name) / "app.py").stat().st_mtime_ns
                   for name in ("r1", "r2")}
    bad = fleet.release(V2, FLEET)

    canary = fleet.cli("apply")
    assert "applied  canary  Strategy/app" in canary.stdout, canary.stdout + canary.stderr
    assert fleet.content("canary") == V2 and fleet.content("s1") == V1
    second = fleet.cli("apply")
    out = second.stdout
    assert second.returncode == 1, out + second.stderr
    assert "applied  s1  Strategy/app" in out, out
    assert "rolled-back  s2  Strategy/app: health check failed" in out, out
    assert "rolled-back  canary  Strategy/app: recalled: this revision failed on s2 " \
        "(wave 2)" in out, out
    assert "rolled-back  s1  Strategy/app: recalled" in out, out
    assert {name: fleet.content(name) for name in FLEET} == dict.fromkeys(FLEET, V1)
    assert (fleet.root("canary") / "restarts").read_text().endswith(V2 + V1), \
        "the canary was restarted with what it had before"
    assert {name: (fleet.root(name) / "app.py").stat().st_mtime_ns
            for name in ("r1", "r2")} == rest_before, "later waves are untouched"

    journal = fleet.journal()
    try:
        for name in ("canary", "s1", "s2"):
            state = journal.object((name, "Strategy", "app")) or {}
            assert state["failed_revision"] == bad, name
            assert "recalled" in state["failed_reason"] or name == "s2"
        recalls = [e for e in journal.events("app", limit=1000)
                   if e.action == "recall" and e.revision == bad]
        assert [(e.target, e.phase) for e in recalls] == [
            ("canary", "intent"), ("canary", "done"), ("s1", "intent"), ("s1", "done")]
        delivered = {e.target for e in journal.events("app", limit=1000)
                     if e.action == "deliver" and e.revision == bad}
        assert delivered == {"canary", "s1", "s2"}
    finally:
        journal.close()

    again = fleet.cli("apply")
    assert "applied" not in again.stdout and "rolled-back" not in again.stdout, again.stdout
    assert "blocked  r1  Strategy/app: held: this revision failed on canary (wave 1), " \
        "s1 (wave 2), s2 (wave 2)" in again.stdout, again.stdout

    status = json.loads(fleet.cli("status", "--output", "json").stdout)
    waves = {row["target"]: row["wave"] for row in status["objects"]}
    assert waves["canary"] == {"wave": 1, "after": [], "needed": 0, "healthy": 0}
    assert waves["s2"] == {"wave": 2, "after": ["canary"], "needed": 1, "healthy": 0}
    assert waves["r1"] == {"wave": 3, "after": ["s1", "s2"], "needed": 2, "healthy": 0}
    text = fleet.cli("status").stdout
    assert "WAVE" in text and "3 (0/2 healthy)" in text, text

    fleet.release(V3, FLEET)  # a new commit is a new attempt, wave by wave again
    fleet.apply_until_settled()
    assert {name: fleet.content(name) for name in FLEET} == dict.fromkeys(FLEET, V3)


def test_a_failing_downstream_target_recalls_its_upstream_and_says_so(tmp_path: Path) -> None:
    """The single-name ``after`` of before waves: a failure downstream used to leave the
    upstream target running the revision that just failed."""
    fleet = Waves(tmp_path, {"canary": None, "prod": "canary"})
    fleet.apply_until_settled()
    (fleet.root("prod") / "refuses").write_text("")
    fleet.release(V2, ("canary", "prod"))
    assert fleet.cli("apply").returncode == 0
    assert fleet.content("canary") == V2
    events: list[Event] = []
    journal = Journal(fleet.state / "journal.db")
    try:
        outcome = run_pass(Wiring(load_settings(fleet.settings, {})), journal,
                           threading.Event(), hooks=Hooks(event=events.append))
    finally:
        journal.close()
    assert outcome.report is not None
    assert {(r.action.target, r.result) for r in outcome.report.results} >= {
        ("prod", "rolled-back"), ("canary", "rolled-back")}
    assert fleet.content("canary") == V1 and fleet.content("prod") == V1
    rolled = [e for e in events if e.type is EventType.ROLLED_BACK]
    assert [(e.target, e.kind, e.name, e.reason) for e in rolled] == [
        ("prod", "Strategy", "app", "RolledBack"), ("canary", "Strategy", "app", "WaveFailed")]
    assert rolled[1].digest == hashlib.sha256(V2.encode()).hexdigest(), "what was taken back"


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _end(pid: int) -> None:
    """The restart the killed pass left hanging (ours: it sleeps in our test's script)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + 30
    while status.exists() and "State:\tZ" not in status.read_text(errors="replace") \
            and time.monotonic() < deadline:
        time.sleep(0.05)


def test_kill_9_during_a_recall_converges_on_the_next_pass(tmp_path: Path) -> None:
    fleet = waves_fleet(tmp_path)
    (fleet.root("s2") / "refuses").write_text("")
    (fleet.root("canary") / "block").write_text("")
    bad = fleet.release(V2, FLEET)
    assert fleet.cli("apply").returncode == 0  # the canary takes v2
    process = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--config",
                                str(fleet.settings)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **GIT_ENV})
    try:
        _wait_for(fleet.root("canary") / "restarting", process)  # v1 is back, restarting
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    _end(int((fleet.root("canary") / "restarting").read_text()))
    (fleet.root("canary") / "block").unlink()

    plan = fleet.cli("plan")
    assert "< Strategy app: recall file app.py" in plan.stdout, plan.stdout
    after = fleet.cli("apply")
    assert "rolled-back  canary  Strategy/app: recalled" in after.stdout, after.stdout
    assert {name: fleet.content(name) for name in FLEET} == dict.fromkeys(FLEET, V1)
    assert (fleet.root("canary") / "restarts").read_text().endswith(V1)
    journal = fleet.journal()
    try:
        state = journal.object(("canary", "Strategy", "app")) or {}
        assert (state["failed_revision"], state["applied_digest"]) == (
            bad, journal.object(("r1", "Strategy", "app"))["applied_digest"])  # type: ignore[index]
        phases = [e.phase for e in journal.events("app", limit=1000)
                  if e.action == "recall" and e.target == "canary"]
        assert phases == ["intent", "interrupted", "intent", "done"]
    finally:
        journal.close()
    assert "applied" not in fleet.cli("apply").stdout


MODEL_HEALTH = """import pathlib, sys
here = pathlib.Path('.')
weights = (here / 'models' / 'current.bin').read_bytes()
sys.exit(1 if (here / 'refuses').exists() and weights == b'weights-v2' else 0)
"""


def test_a_model_pointer_is_recalled_to_the_digest_it_named(tmp_path: Path) -> None:
    fleet = Waves(tmp_path, {"canary": None, "prod": "canary"})
    (tmp_path / "model_health.py").write_text(MODEL_HEALTH)

    def declare(weights: bytes) -> str:
        (fleet.repo / "desired-state" / "policy.bin").write_bytes(weights)
        fleet.write("model.yaml", f"""apiVersion: reconciler/v1
kind: Model
metadata: {{name: policy}}
spec:
  targets: [canary, prod]
  artifact: {{uri: policy.bin, sha256: {hashlib.sha256(weights).hexdigest()}, format: file}}
  pointer: {{path: models/current.bin}}
  health: {{command: [{sys.executable}, {tmp_path / 'model_health.py'}], timeout: 10s}}
""")
        git(fleet.repo, "add", "-A")
        git(fleet.repo, "commit", "-q", "-m", f"weights {weights.decode()}")
        return hashlib.sha256(weights).hexdigest()

    v1 = declare(b"weights-v1")
    fleet.apply_until_settled()
    pointer = {name: fleet.root(name) / "models" / "current.bin" for name in ("canary", "prod")}
    assert all(path.read_bytes() == b"weights-v1" for path in pointer.values())
    (fleet.root("prod") / "refuses").write_text("")
    v2 = declare(b"weights-v2")
    assert fleet.cli("apply").returncode == 0
    assert pointer["canary"].read_bytes() == b"weights-v2"
    plan = fleet.cli("plan", "--output", "json")
    flips = {a["target"]: a["op"] for a in json.loads(plan.stdout)["actions"]
             if a["kind"] == "Model"}
    assert flips == {"canary": "noop", "prod": "flip"}

    failed = fleet.cli("apply")
    assert "rolled-back  prod  Model/policy" in failed.stdout, failed.stdout
    assert "rolled-back  canary  Model/policy: recalled" in failed.stdout, failed.stdout
    for path in pointer.values():
        assert path.is_symlink() and Path(os.readlink(path)).name == v1
    journal = fleet.journal()
    try:
        recall = [e for e in journal.events("policy", limit=1000) if e.action == "recall"]
        assert [(e.target, e.phase, e.detail.get("from"), e.detail.get("to"))
                for e in recall] == [("canary", "intent", v2, v1), ("canary", "done", None,
                                                                     None)]
    finally:
        journal.close()


def test_status_forgets_the_wave_of_a_target_whose_after_was_removed(tmp_path: Path) -> None:
    """The wave column is as of the last pass: once no target waits for another, the
    object has no waves, and ``status`` must not keep showing the wave it had."""
    fleet = Waves(tmp_path, {"canary": None, "prod": "canary"})
    fleet.apply_until_settled()
    status = json.loads(fleet.cli("status", "--output", "json").stdout)
    assert {row["target"]: row["wave"]["wave"] for row in status["objects"]} == {
        "canary": 1, "prod": 2}
    fleet.write("targets.yaml", "---\n".join(target_doc(name, None)
                                             for name in ("canary", "prod")))
    git(fleet.repo, "commit", "-qam", "prod no longer waits for the canary")
    fleet.apply_until_settled()
    status = json.loads(fleet.cli("status", "--output", "json").stdout)
    assert {row["target"]: row["wave"] for row in status["objects"]} == {
        "canary": None, "prod": None}
    assert "WAVE" not in fleet.cli("status").stdout


def test_a_recall_whose_content_before_left_the_store_is_held_and_says_so(
        tmp_path: Path) -> None:
    """The canary, suspended, keeps the failed revision; while it is, what it had before is
    quarantined. Once resumed, its recall must hold with a message that says what to do,
    put nothing else there, and not try again and again as a fault."""
    fleet = Waves(tmp_path, {"canary": None, "prod": "canary"})
    fleet.apply_until_settled()
    (fleet.root("prod") / "refuses").write_text("")
    fleet.release(V2, ("canary", "prod"))
    assert fleet.cli("apply").returncode == 0
    assert fleet.cli("suspend", "canary", "--reason", "look at it").returncode == 0
    fleet.cli("apply")
    assert fleet.content("canary") == V2 and fleet.content("prod") == V1
    v1 = hashlib.sha256(V1.encode()).hexdigest()
    stored = next(path for path in fleet.state.rglob(v1) if path.is_file())
    stored.chmod(0o644)
    stored.write_text("tampered\n")  # the next proof quarantines it
    assert fleet.cli("resume", "canary").returncode == 0

    held = fleet.cli("apply")
    assert fleet.content("canary") == V2, "nothing is guessed"
    assert "blocked  canary  Strategy/app" in held.stdout, held.stdout + held.stderr
    assert "no longer in the store" in held.stdout, held.stdout
    assert "put it back by hand" in held.stdout, held.stdout
    status = json.loads(fleet.cli("status", "--output", "json").stdout)
    canary = next(row for row in status["objects"] if row["target"] == "canary")
    assert canary["reason"] == "WaveFailed", canary


def test_a_failed_drift_repair_on_one_target_recalls_nothing_elsewhere(
        tmp_path: Path) -> None:
    """A revision that went out through every wave and soaked is not a wave that failed
    when, later, a repair of a hand edit on one host fails its check there: that host is
    held, and the rest of the fleet keeps the revision."""
    fleet = Waves(tmp_path, {"canary": None, "prod": "canary"})
    fleet.release(V2, ("canary", "prod"))
    fleet.apply_until_settled()
    assert fleet.content("canary") == V2 and fleet.content("prod") == V2
    (fleet.root("prod") / "refuses").write_text("")
    (fleet.root("prod") / "app.py").write_text("VERSION = 'edited by hand'\n")
    repair = fleet.cli("apply")
    assert "rolled-back  prod  Strategy/app" in repair.stdout, repair.stdout + repair.stderr
    assert "recalled" not in repair.stdout, repair.stdout
    assert fleet.content("canary") == V2
    again = fleet.cli("apply")
    assert "recall" not in again.stdout and fleet.content("canary") == V2, again.stdout
