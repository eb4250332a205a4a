"""One pass at a time on a small fleet: delivery, restart, health, rollback, drift, flips."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.execute.executor import Hooks
from tests.fleet import HEALTH, HEALTHY, Fleet, sha


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


def test_first_pass_delivers_flips_and_then_is_in_sync(fleet: Fleet) -> None:
    first = fleet.apply()
    assert first.result == "changed", first.message
    assert fleet.results(first) == {"Strategy/app": "applied", "Model/policy": "applied"}
    delivered = fleet.root / "app" / "app.py"
    assert delivered.read_text() == HEALTHY
    assert stat.S_IMODE(delivered.stat().st_mode) == 0o640
    pointer = fleet.root / "models" / "current.bin"
    assert pointer.is_symlink()
    assert os.readlink(pointer) == str(fleet.state / "store" / "sha256" / sha(b"weights-v1"))
    assert pointer.read_bytes() == b"weights-v1"
    assert (fleet.root / "restarts").read_text() == "xx"
    second = fleet.apply()
    assert second.result == "converged"
    assert (fleet.root / "restarts").read_text() == "xx", "no change, no restart"
    assert not list(fleet.root.rglob(".*.new-*")), "no temporary files left behind"


def test_failed_health_rolls_back_marks_the_revision_and_does_not_retry(fleet: Fleet) -> None:
    fleet.apply()
    fleet.strategy("BROKEN = 'imports fine, fails its health check'\n")
    bad = fleet.commit("a strategy that fails its health check")
    outcome = fleet.apply()
    assert outcome.result == "failed"
    assert fleet.results(outcome)["Strategy/app"] == "rolled-back"
    assert "health check failed" in outcome.message
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY, "byte-for-byte back"
    journal = fleet.journal()
    state = journal.object(("edge", "Strategy", "app"))
    assert state is not None and state["reason"] == "RolledBack"
    assert state["failed_revision"] == f"main@sha1:{bad}"
    attempts = lambda: [e for e in journal.events("app") if e.action == "deliver"  # noqa: E731
                        and e.phase == "intent" and e.revision == f"main@sha1:{bad}"]
    assert len(attempts()) == 1
    again = fleet.apply()
    assert fleet.results(again)["Strategy/app"] == "blocked"
    assert len(attempts()) == 1, "a failed revision is not retried"

    fleet.strategy("OK = 'fixed'\n")
    fleet.commit("the fix")
    fixed = fleet.apply()
    assert fleet.results(fixed)["Strategy/app"] == "applied"
    assert (fleet.root / "app" / "app.py").read_text() == "OK = 'fixed'\n"


def test_hold_keeps_the_failed_content_in_place(fleet: Fleet) -> None:
    fleet.apply()
    fleet.strategy("BROKEN = 1\n", extra="  onFailure: hold\n")
    fleet.commit("held")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == "failed"
    assert (fleet.root / "app" / "app.py").read_text() == "BROKEN = 1\n"


@pytest.mark.parametrize(("restart", "health", "expected"), [
    ("[no-such-binary-anywhere]", f"command: [python3, -c, \"{HEALTH}\"]",
     "command not found: no-such-binary-anywhere"),
    ("[python3, -c, 'import sys; sys.exit(4)']", f"command: [python3, -c, \"{HEALTH}\"]",
     "exited with 4"),
    ("[python3, -c, 'pass']", "http: {{url: 'http://127.0.0.1:{port}/healthz'}}",
     "Connection refused"),
])
def test_restart_and_health_faults_roll_back_with_the_reason(
        fleet: Fleet, restart: str, health: str, expected: str) -> None:
    fleet.apply()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        fleet.strategy("OK = 'new version'\n", restart=restart, health=health.format(port=port))
        fleet.commit("faulty restart or health")
        outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == "rolled-back"
    assert expected in outcome.message
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY


def test_unwritable_fleet_root_fails_clearly_and_recovers_once_fixed(fleet: Fleet) -> None:
    fleet.root.parent.mkdir(parents=True)
    fleet.root.write_text("a file where the target's root should be\n")
    outcome = fleet.apply()
    assert outcome.result == "failed"
    assert "cannot write app/app.py" in outcome.message
    assert fleet.root.read_text() == "a file where the target's root should be\n"
    state = fleet.journal().object(("edge", "Strategy", "app")) or {}
    assert (state["reason"], state["failed_revision"]) == ("WriteFailed", None)
    fleet.root.unlink()  # the operator fixes the host; no new commit is needed
    assert fleet.apply().result == "changed"
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY


def test_hand_edits_are_drift_and_are_put_back(fleet: Fleet) -> None:
    fleet.apply()
    delivered = fleet.root / "app" / "app.py"
    delivered.write_text("OK = 'edited by hand at 3 a.m.'\n")
    drifted: list[str] = []
    outcome = fleet.apply(Hooks(drift=drifted.append))
    assert fleet.results(outcome)["Strategy/app"] == "applied"
    assert delivered.read_text() == HEALTHY
    assert drifted == ["Strategy"]
    events = [e for e in fleet.journal().events("app") if e.action == "deliver"]
    assert events[-2].detail["drift"] is True


def test_operator_permissions_on_a_delivered_file_are_kept(fleet: Fleet) -> None:
    fleet.apply()
    delivered = fleet.root / "app" / "app.py"
    delivered.chmod(0o600)
    fleet.strategy("OK = 'v2'\n")
    fleet.commit("v2")
    fleet.apply()
    assert delivered.read_text() == "OK = 'v2'\n"
    assert stat.S_IMODE(delivered.stat().st_mode) == 0o600


def test_model_digest_mismatch_never_flips(fleet: Fleet) -> None:
    fleet.apply()
    before = os.readlink(fleet.root / "models" / "current.bin")
    fleet.model(b"weights-v2", declared=sha(b"something else"))
    fleet.commit("wrong digest")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Model/policy"] == "failed"
    assert "was not verified" in outcome.message and sha(b"weights-v2") in outcome.message
    assert os.readlink(fleet.root / "models" / "current.bin") == before
    assert not (fleet.state / "store" / "sha256" / sha(b"something else")).exists()


def test_model_failing_its_health_check_flips_back(fleet: Fleet) -> None:
    fleet.apply()
    before = os.readlink(fleet.root / "models" / "current.bin")
    fleet.model(b"bad")
    fleet.commit("a model its consumers reject")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Model/policy"] == "rolled-back"
    assert os.readlink(fleet.root / "models" / "current.bin") == before
    assert (fleet.root / "models" / "current.bin").read_bytes() == b"weights-v1"


def test_exhausted_restart_budget_blocks_before_anything_changes(fleet: Fleet) -> None:
    fleet.write("budget.yaml", "apiVersion: reconciler/v1\nkind: Budget\nmetadata: {name: b}\n"
                               "spec: {restartsPerHour: 2}\n")
    fleet.commit("budget")
    fleet.apply()  # two restarts: the strategy and the model
    fleet.strategy("OK = 'v2'\n")
    fleet.commit("v2")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == "blocked"
    assert "restart budget exhausted: 2 of 2" in outcome.message
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY


def test_invalid_commit_keeps_the_fleet_as_it_was(fleet: Fleet) -> None:
    fleet.apply()
    snapshot: Callable[[], dict[str, bytes]] = lambda: {  # noqa: E731
        str(p): p.read_bytes() for p in fleet.root.rglob("*") if p.is_file()}
    before = snapshot()
    fleet.write("app.yaml", "apiVersion: reconciler/v1\nkind: Strategy\nmetadata: {name: app}\n"
                            "spec: {source: app.py}\n")
    fleet.commit("invalid")
    outcome = fleet.apply()
    assert outcome.result == "invalid"
    assert "app.yaml:4:7" in outcome.message
    assert snapshot() == before


def test_downstream_target_waits_for_the_upstream_soak_and_says_until_when(
        fleet: Fleet) -> None:
    fleet.write("prod.yaml", "apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: prod}\n"
                             "spec: {local: {root: prod}, after: edge, soak: 30m}\n")
    fleet.write("knobs.yaml", "apiVersion: reconciler/v1\nkind: Config\nmetadata: {name: knobs}\n"
                              "spec: {targets: [edge, prod], deliver: {path: knobs.json}, "
                              "data: {floor: 0.5}}\n")
    fleet.commit("a second environment")
    first = fleet.apply()
    assert first.result == "changed"
    assert (fleet.root / "knobs.json").exists()
    assert not (fleet.state / "fleet" / "prod" / "knobs.json").exists()
    fleet.apply()  # edge is healthy now: prod soaks from here
    state = fleet.journal().object(("prod", "Config", "knobs")) or {}
    assert (state["status"], state["reason"]) == ("Reconciling", "Soaking")
    assert "soaking on edge for 30m (until 20" in state["message"]
    assert not (fleet.state / "fleet" / "prod" / "knobs.json").exists()


def test_store_keeps_the_last_canonical_digests_and_reverts_refetch(fleet: Fleet) -> None:
    store = fleet.state / "store" / "sha256"
    artifacts = [b"weights-v1", b"weights-v2", b"weights-v3", b"weights-v4"]
    assert fleet.apply().result == "changed"  # v1 canonical
    for artifact in artifacts[1:]:
        fleet.model(artifact)
        text = (fleet.repo / "desired-state" / "model.yaml").read_text()
        fleet.write("model.yaml", text.replace("  pointer:", "  keep: 2\n  pointer:"))
        fleet.commit(f"model {artifact.decode()}")
        assert fleet.apply().result == "changed"
    present = {a for a in artifacts if (store / sha(a)).exists()}
    assert present == {b"weights-v3", b"weights-v4"}, "keep: 2"
    removed = [e.detail["removed"] for e in fleet.journal().events(limit=1000)
               if e.action == "collect"]
    assert removed == [sha(b"weights-v1"), sha(b"weights-v2")]
    fleet.model(b"weights-v1")  # a revert to a collected digest fetches and verifies again
    fleet.commit("back to v1")
    assert fleet.apply().result == "changed"
    assert (fleet.root / "models" / "current.bin").read_bytes() == b"weights-v1"


def test_a_hand_copied_canonical_file_is_kept_and_comes_back_on_rollback(fleet: Fleet) -> None:
    pointer = fleet.root / "models" / "current.bin"
    pointer.parent.mkdir(parents=True)
    pointer.write_bytes(b"hand-copied weights from the old runbook")
    fleet.model(b"bad")  # its consumers reject it: the flip is undone
    fleet.commit("first managed model is bad")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Model/policy"] == "rolled-back"
    assert pointer.read_bytes() == b"hand-copied weights from the old runbook"
    assert pointer.is_symlink(), "now a pointer into the store, to the same bytes"


def test_apply_status_and_history_through_the_command_line(fleet: Fleet) -> None:
    import json
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", *args, "--config",
                               str(fleet.settings_file)], capture_output=True, text=True,
                              check=False)

    first = cli("apply")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "applied  edge  Strategy/app" in first.stdout
    assert cli("apply").returncode == 0  # converged
    status = json.loads(cli("status", "--output", "json").stdout)
    assert status["lastPass"]["result"] == "converged"
    rows = {(o["kind"], o["name"]): o for o in status["objects"]}
    assert rows[("Strategy", "app")]["status"] == "Ready"
    assert rows[("Model", "policy")]["applied_digest"] == sha(b"weights-v1")
    history = json.loads(cli("history", "app", "--output", "json").stdout)
    assert [(e["action"], e["phase"]) for e in history[:2]] == [("deliver", "intent"),
                                                                ("deliver", "done")]
    fleet.strategy("BROKEN = 1\n")
    fleet.commit("broken")
    failed = cli("apply")
    assert failed.returncode == 1 and "rolled-back" in failed.stdout


def test_a_rollback_whose_previous_state_is_unhealthy_says_so(fleet: Fleet) -> None:
    marker = ("command: [python3, -c, "
              "\"import os, sys; sys.exit(0 if os.path.exists('up') else 1)\"]")
    fleet.strategy("OK = 'v1'\n", health=marker)
    fleet.commit("health depends on the host")
    fleet.root.mkdir(parents=True)
    (fleet.root / "up").write_text("")
    assert fleet.results(fleet.apply())["Strategy/app"] == "applied"
    (fleet.root / "up").unlink()  # the host breaks: nothing can be healthy now
    fleet.strategy("OK = 'v2'\n", health=marker)
    fleet.commit("v2")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == "rolled-back"
    assert "the previous state is back, but it is not healthy either" in outcome.message
    assert (fleet.root / "app" / "app.py").read_text() == "OK = 'v1'\n"
