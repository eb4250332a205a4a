"""The executor against in-memory places (tests/fakes.py) and a real journal: the steps,
their order, undo, deferred restarts and how a raising step becomes an outcome."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from reconciler.execute.executor import Executor, Hooks
from reconciler.journal import Journal
from reconciler.plan.planner import History, Plan, plan
from reconciler.vocabulary import JournalAction, Reason
from tests.builders import REVISION, budget, desired, model, sha, strategy, target
from tests.fakes import FakeFleet, FakeStore

OLD, NEW = b"OK = 1\n", b"OK = 2\n"
V1, V2 = b"weights v1", b"weights v2"
KEY = ("staging", "Strategy", "gepetto")


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.store = FakeStore()
        self.fleet = FakeFleet(self.store)
        self.journal = Journal(tmp_path / "journal.db")
        self.stop = threading.Event()
        self.counted: list[str] = []
        self.state = desired(targets=(target("staging"),), strategies=(strategy(),),
                             models=(model(digest=sha(V2), health=True),),
                             contents={"gepetto": NEW}, files={"policy.pt": V2})
        self.place = self.fleet.place(self.state.targets["staging"])
        self.place.files["strategies/gepetto.py"] = OLD
        self.store.put(V1)
        self.store.put(V2)  # fetched before: the fake store takes no downloads
        self.place.pointers["models/policy.pt"] = sha(V1)

    def plan(self) -> Plan:
        seen = self.fleet.observe(self.state.targets["staging"], ["strategies/gepetto.py"],
                                  ["models/policy.pt"])
        return plan(self.state, {"staging": seen}, self.journal.history(0.0), 0.0)

    def run(self) -> dict[str, tuple[str, str]]:
        hooks = Hooks(drift=lambda kind: self.counted.append(f"drift {kind}"),
                      rollback=lambda kind: self.counted.append(f"rollback {kind}"))
        executor = Executor(lambda t: self.fleet, self.store, self.journal, self.stop,
                            hooks=hooks)
        report = executor.execute(self.plan(), self.state, 1)
        return {r.action.kind: (r.result, r.message) for r in report.results}


def test_a_change_is_written_restarted_checked_and_recorded(tmp_path: Path) -> None:
    world = World(tmp_path)
    results = world.run()
    assert results["Strategy"][0] == "applied" and results["Model"][0] == "applied"
    assert world.place.calls == ["write strategies/gepetto.py", "restart Strategy/gepetto",
                                 "check Strategy/gepetto", f"flip {sha(V2)[:8]}",
                                 "restart Model/policy", "check Model/policy"]
    assert world.journal.object(KEY)["applied_digest"] == sha(NEW)  # type: ignore[index]
    assert world.store.objects[sha(OLD)] == OLD, "the old content was kept for a rollback"


def test_a_failed_check_puts_back_the_exact_old_content_and_marks_the_revision(
        tmp_path: Path) -> None:
    world = World(tmp_path)
    world.place.check_results = [False, True]
    results = world.run()
    assert results["Strategy"][0] == "rolled-back"
    assert world.place.files["strategies/gepetto.py"] == OLD
    assert world.counted == ["rollback Strategy"]
    row = world.journal.object(KEY)
    assert row is not None and (row["failed_digest"], row["reason"]) == (sha(NEW), "RolledBack")
    assert world.plan().actions[0].reason == "FailedBefore", "not retried in a loop"


def test_a_corrupt_rollback_target_is_never_written_back(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.place.check_results = [False]
    world.place.preserve = lambda address: world.store.objects.__setitem__(  # type: ignore
        sha(OLD), b"tampered")
    results = world.run()
    assert results["Strategy"][0] == "failed"
    assert "StoreObjectMissing" in results["Strategy"][1]
    assert world.store.quarantined == [sha(OLD)]
    assert world.place.files["strategies/gepetto.py"] == NEW, "nothing unverified came back"


def test_a_step_that_raises_anything_becomes_a_stalled_outcome_and_the_pass_goes_on(
        tmp_path: Path) -> None:
    world = World(tmp_path)
    world.place.explode = lambda content: ZeroDivisionError("division by zero") \
        if content == NEW else None
    results = world.run()
    result, message = results["Strategy"]
    assert result == "failed" and "UnexpectedError" in message
    assert "ZeroDivisionError: division by zero" in message
    row = world.journal.object(KEY)
    assert row is not None and (row["status"], row["reason"]) == ("Stalled", "UnexpectedError")
    assert results["Model"][0] == "applied", "the next action still ran"


def test_a_drift_repair_with_its_restart_deferred_writes_now_and_owes_the_restart(
        tmp_path: Path) -> None:
    world = World(tmp_path)
    world.run()
    world.place.calls.clear()
    world.place.files["strategies/gepetto.py"] = b"edited by hand\n"
    world.place.pointers["models/policy.pt"] = sha(V1)
    world.state = desired(targets=world.state.targets.values().__iter__().__next__(),
                          ) if False else world.state

    world.state = replace(world.state, budgets={"limits": budget(restarts_per_hour=4)})
    results = world.run()  # two restarts were done in the first run: two left, one flip
    assert results["Strategy"][0] == "applied" and results["Model"][0] == "applied"
    assert world.counted == ["drift Strategy", "drift Model"], "pointer drift counted too"
    world.place.files["strategies/gepetto.py"] = b"edited again\n"
    world.place.calls.clear()
    results = world.run()
    assert results["Strategy"][0] == "waiting"
    assert "restart is deferred (restart budget exhausted" in results["Strategy"][1]
    assert world.place.calls == ["write strategies/gepetto.py"], "repaired, not restarted"
    row = world.journal.object(KEY)
    assert row is not None and row["reason"] == Reason.RESTART_DEFERRED
    owed = world.plan().actions[0]
    assert (owed.status, owed.reason) == ("waiting", "RestartDeferred")


def test_a_stop_during_the_soak_undoes_without_a_mark_and_says_the_check_was_skipped(
        tmp_path: Path) -> None:
    world = World(tmp_path)

    def stop_then_fail(*args: object) -> object:
        world.stop.set()
        from reconciler.places import CommandResult
        return CommandResult(False, "stopped during the health soak")

    world.place.check = stop_then_fail  # type: ignore[method-assign,assignment]
    results = world.run()
    result, message = results["Strategy"]
    assert result == "skipped"
    assert "its health check was skipped: the daemon is stopping" in message
    assert "not healthy either" not in message
    row = world.journal.object(KEY)
    assert row is not None and row["failed_digest"] is None and row["reason"] == "Interrupted"
    rollback = [e for e in world.journal.events() if e.action == "rollback"]
    assert [e.phase for e in rollback] == ["intent", "done"]
    assert world.place.files["strategies/gepetto.py"] == OLD


def test_history_sees_the_pass(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.run()
    history: History = world.journal.history(10.0 ** 10)
    assert history.applied[KEY] == sha(NEW)


def test_after_a_crash_between_write_and_check_the_rollback_target_comes_from_the_journal(
        tmp_path: Path) -> None:
    """The first attempt wrote NEW and died before its check: the live file already holds
    NEW, and only the journal's intent knows it replaced OLD (no healthy digest yet)."""
    world = World(tmp_path)
    world.store.put(OLD)  # preserved by the attempt that died
    world.journal.intent(JournalAction.DELIVER, KEY, pass_id=1, revision=REVISION,
                         detail={"path": "strategies/gepetto.py", "from": sha(OLD),
                                 "to": sha(NEW), "drift": False})
    world.journal.attempted(KEY, sha(NEW), REVISION)
    world.journal.recover()
    world.place.files["strategies/gepetto.py"] = NEW
    assert world.plan().actions[0].finishes
    world.place.check_results = [False, True]
    results = world.run()
    assert results["Strategy"][0] == "rolled-back"
    assert world.place.files["strategies/gepetto.py"] == OLD, "not the content being undone"
    intents = world.journal.intents(JournalAction.DELIVER, KEY)
    assert intents[0]["from"] == sha(OLD), "the retry records what was really replaced"


def test_held_content_is_never_recorded_healthy(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.state = replace(world.state, strategies={"gepetto": strategy(on_failure="hold")})
    world.place.check_results = [False]
    assert world.run()["Strategy"][0] == "failed"
    assert world.place.files["strategies/gepetto.py"] == NEW, "held in place"
    again = world.run()["Strategy"]
    assert again[0] == "blocked" and "it failed" in again[1]
    row = world.journal.object(KEY)
    assert row is not None and row["status"] == "Stalled" and row["healthy_digest"] is None
