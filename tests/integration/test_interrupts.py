"""What a suspension or a newer revision leaves of an action under way, with a real
repository, real restart and health commands and a real sandboxed gauntlet: the content in
place stays, nothing is rolled back or marked failed, a gate remembers no verdict."""

from __future__ import annotations

import threading
from pathlib import Path

from reconciler.events import Event, EventType
from reconciler.execute.executor import Hooks
from reconciler.execute.interrupts import ActionInterrupt, Cause, Running
from tests.fleet import HEALTHY, Fleet

SLOW_GATE = ["python3", "-c", "import time; time.sleep(120)"]


def firing(cause: Cause, kind: str, heard: list[Event]) -> Hooks:
    """Hooks that fire ``cause`` half a second into the first ``kind`` action."""

    def running(action: Running | None, interrupt: ActionInterrupt) -> None:
        if action is not None and action.kind == kind:
            threading.Timer(0.5, interrupt.fire, (cause, f"{cause} for the test")).start()

    return Hooks(running=running, event=heard.append)


def test_a_superseded_gauntlet_remembers_no_verdict_and_flips_nothing(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.apply()
    pointer = (fleet.root / "models" / "current.bin").read_bytes()
    fleet.model(b"weights-v2")
    fleet.gate(SLOW_GATE)
    fleet.commit("a gated model whose gate takes two minutes")
    heard: list[Event] = []
    outcome = fleet.apply(firing(Cause.SUPERSEDED, "Model", heard))
    assert fleet.results(outcome)["Model/policy"] == "skipped"
    assert outcome.report is not None and outcome.report.replan, "planned again at once"
    assert (fleet.root / "models" / "current.bin").read_bytes() == pointer, "nothing flipped"
    journal = fleet.journal()
    try:
        state = journal.object(("edge", "Model", "policy")) or {}
        gates = journal.events(action="gate")
        superseded = journal.events(action="superseded")
    finally:
        journal.close()
    assert state["failed_digest"] is None, "not marked failed"
    assert all(event.detail["remembered"] is False for event in gates)
    assert gates and gates[0].detail["reason"] == "GauntletStopped"
    assert superseded[0].detail["left"].startswith("the gate was ended without a verdict")
    # Fired by hand, the revision did not change: each of the pass's plans met it again.
    assert {event.type for event in heard} == {EventType.SUPERSEDED}
    assert all(event.revision == outcome.revision and event.kind == "Model" for event in heard), \
        "the superseded revision is named, so its commit status can say 'canceled'"


def test_a_suspension_during_a_health_check_leaves_the_content_and_marks_nothing(
        tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.apply()
    fleet.strategy("OK = 'new'\n", health="command: [python3, -c, 'pass'], soak: 60s")
    fleet.commit("a change with a long soak")
    outcome = fleet.apply(firing(Cause.SUSPENDED, "Strategy", []))
    assert fleet.results(outcome)["Strategy/app"] == "waiting"
    assert (fleet.root / "app" / "app.py").read_text() == "OK = 'new'\n", "left in place"
    journal = fleet.journal()
    try:
        state = journal.object(("edge", "Strategy", "app")) or {}
        rollbacks = journal.events(action="rollback")
        health = [event.phase for event in journal.events(action="health")]
    finally:
        journal.close()
    assert state["reason"] == "Suspended" and state["failed_digest"] is None
    assert "file app/app.py is left as it is, unverified" in state["message"]
    assert rollbacks == [] and health[-1] == "interrupted"
    # Nothing suspended it in the journal (the test fired by hand): the next pass
    # finishes what was left, its restart and its check.
    fleet.strategy("OK = 'new'\n")
    fleet.commit("the same content, a short check")
    assert fleet.results(fleet.apply())["Strategy/app"] == "applied"
    assert (fleet.root / "app" / "app.py").read_text() != HEALTHY
