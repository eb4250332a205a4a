"""Stop the line, the pure parts: the planner holds every action on a suspended target;
an action's interrupt says why it ended."""

from __future__ import annotations

import threading
from dataclasses import replace

from reconciler.execute.interrupts import ActionInterrupt, Cause
from reconciler.plan.planner import ALL_TARGETS, History, Suspension, plan
from reconciler.vocabulary import ActionStatus, Op, Reason
from tests.unit.test_planner import (
    DIGEST_A,
    DIGEST_B,
    MODEL_V1,
    MODEL_V2,
    desired,
    observed,
)

HELD = Suspension("staging", "alice", 0.0, "INC-4711")


def _changes(history: History) -> dict[tuple[str, str], tuple[ActionStatus, Reason | None]]:
    result = plan(desired(), observed({"staging": DIGEST_A, "production": DIGEST_A},
                                      {"staging": MODEL_V1, "production": MODEL_V1}),
                  history, 0.0)
    return {(a.target, a.kind): (a.status, a.reason) for a in result.actions
            if a.op is not Op.NOOP}


def test_every_change_on_a_suspended_target_waits_and_the_others_do_not() -> None:
    free = _changes(History())
    held = _changes(History(suspended={"staging": HELD}))
    assert held[("staging", "Strategy")] == (ActionStatus.WAITING, Reason.SUSPENDED)
    assert held[("staging", "Model")] == (ActionStatus.WAITING, Reason.SUSPENDED)
    assert free[("staging", "Strategy")] == (ActionStatus.READY, None)
    assert {k: v for k, v in held.items() if k[0] == "production"} == \
        {k: v for k, v in free.items() if k[0] == "production"}


def test_a_drift_repair_on_a_suspended_target_waits_and_says_so() -> None:
    history = History(applied={("staging", "Strategy", "gepetto"): DIGEST_B},
                      suspended={"staging": HELD})
    result = plan(desired(), observed({"staging": DIGEST_A, "production": DIGEST_B},
                                      {"staging": MODEL_V2, "production": MODEL_V2}),
                  history, 0.0)
    repair = next(a for a in result.actions if a.target == "staging" and a.op is Op.UPDATE)
    assert repair.drift and repair.status is ActionStatus.WAITING
    assert repair.reason is Reason.SUSPENDED
    assert repair.message is not None
    assert "drift on file strategies/gepetto.py is not repaired" in repair.message
    assert "suspended by alice at 1970-01-01 00:00:00 UTC: INC-4711" in repair.message
    assert "reconciler resume staging" in repair.message


def test_suspend_all_covers_targets_declared_later() -> None:
    fleet_wide = History(suspended={ALL_TARGETS: replace(HELD, target=ALL_TARGETS)})
    assert fleet_wide.suspension("a-target-declared-tomorrow") is not None
    held = _changes(fleet_wide)
    assert set(held.values()) == {(ActionStatus.WAITING, Reason.SUSPENDED)}


def test_an_interrupt_says_why_it_ended_a_wait() -> None:
    stop = threading.Event()
    interrupt = ActionInterrupt(stop)
    assert not interrupt.wait(0.01) and interrupt.cause is None
    threading.Timer(0.05, interrupt.fire, (Cause.SUPERSEDED, "a newer commit")).start()
    assert interrupt.wait(30)
    assert (interrupt.cause, interrupt.why) == (Cause.SUPERSEDED, "a newer commit")
    interrupt.fire(Cause.SUSPENDED, "later")  # the first cause stays
    assert interrupt.cause is Cause.SUPERSEDED
    interrupt.reset()
    assert not interrupt.is_set() and interrupt.cause is None
    threading.Timer(0.05, stop.set).start()
    assert interrupt.wait(30), "a stop of the pass ends the action's wait"
    assert interrupt.cause is Cause.STOP
