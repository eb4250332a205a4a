"""Budgets and drift repairs in the planner, table-tested with keyword builders: the plan
marks BudgetExhausted exactly where a pass would refuse, and a repair of drift is never
refused — only its restart waits."""

from __future__ import annotations

import pytest

from reconciler.plan.planner import DAY, HOUR, Action, History, plan
from reconciler.plan.render import render_step
from tests.builders import budget, desired, model, observed, sha, strategy, target

NOW = 1_800_000_000.0
NEW, OLD = b"OK = 2\n", b"OK = 1\n"
V1, V2 = "1" * 64, "2" * 64
KEY_S = ("staging", "Strategy", "gepetto")
KEY_M = ("staging", "Model", "policy")


def _one(history: History, *, live: bytes | None = OLD, pointer: str | None = V1,
         restarts: int | None = None, promotions: int | None = None,
         window: dict[str, object] | None = None) -> dict[str, Action]:
    state = desired(targets=(target("staging", window=window),),
                    strategies=(strategy(),), models=(model(digest=V2),),
                    budgets=(budget(restarts_per_hour=restarts,
                                    promotions_per_day=promotions),),
                    contents={"gepetto": NEW})
    seen = observed("staging", files={"strategies/gepetto.py": sha(live) if live else None},
                    pointers={"models/policy.pt": pointer})
    result = plan(state, {"staging": seen}, history, NOW)
    return {action.kind: action for action in result.actions}


def _times(count: int, ago: float = 60.0) -> tuple[float, ...]:
    return tuple(NOW - ago - i for i in range(count))


@pytest.mark.parametrize(("used", "status", "reason"), [
    (0, "ready", None), (5, "ready", None), (6, "blocked", "BudgetExhausted")])
def test_a_change_that_restarts_is_refused_when_the_restart_budget_is_spent(
        used: int, status: str, reason: str | None) -> None:
    actions = _one(History(restarts=_times(used)), restarts=6, pointer=V2)
    assert (actions["Strategy"].status, actions["Strategy"].reason) == (status, reason)
    if reason:
        assert "6 of 6 restarts in the last hour" in (actions["Strategy"].message or "")
        assert actions["Strategy"].not_before == pytest.approx(NOW - 60 - 5 + HOUR)


def test_actions_of_one_pass_spend_the_budget_in_order() -> None:
    actions = _one(History(restarts=_times(5)), restarts=6)
    assert actions["Strategy"].status == "ready"  # the sixth restart
    assert (actions["Model"].status, actions["Model"].reason) == ("blocked", "BudgetExhausted")


def test_restarts_older_than_an_hour_do_not_count() -> None:
    actions = _one(History(restarts=_times(6, ago=HOUR + 1)), restarts=6, pointer=V2)
    assert actions["Strategy"].status == "ready"


def test_a_promotion_is_refused_when_the_promotion_budget_is_spent() -> None:
    actions = _one(History(promotions=_times(2)), promotions=2, live=NEW)
    assert (actions["Model"].status, actions["Model"].reason) == ("blocked", "BudgetExhausted")
    assert "2 of 2 pointer flips in the last day" in (actions["Model"].message or "")
    assert actions["Model"].not_before == pytest.approx(NOW - 61 + DAY)


def test_a_drifted_pointer_is_put_back_whatever_the_promotion_budget_says() -> None:
    history = History(applied={KEY_M: V2}, known_good={"policy": frozenset({V2})},
                      promotions=_times(5))
    actions = _one(history, promotions=2, live=NEW, pointer=V1)
    flip = actions["Model"]
    assert (flip.op, flip.status, flip.drift) == ("flip", "ready", True)
    assert [render_step(s) for s in flip.steps][:2] == ["verify sha256",
                                                         "gate skipped: canonical before"]


def test_a_repair_with_its_restart_budget_spent_runs_and_defers_only_the_restart() -> None:
    history = History(applied={KEY_S: sha(NEW), KEY_M: V2}, restarts=_times(6))
    actions = _one(history, restarts=6, live=OLD, pointer=V2)
    repair = actions["Strategy"]
    assert (repair.status, repair.drift) == ("ready", True)
    assert repair.restart_deferred is not None
    assert "restart budget exhausted" in repair.restart_deferred
    assert render_step(repair.steps[0]).endswith(
        "(deferred: restart budget exhausted: 6 of 6 restarts in the last hour)")


def test_an_owed_restart_waits_for_the_budget_with_a_clear_reason() -> None:
    history = History(applied={KEY_S: sha(NEW), KEY_M: V2}, unfinished={KEY_S: sha(NEW)},
                      restarts=_times(6))
    owed = _one(history, restarts=6, live=NEW, pointer=V2)["Strategy"]
    assert (owed.op, owed.status, owed.reason) == ("update", "waiting", "RestartDeferred")
    assert "the consumer still runs what it loaded" in (owed.message or "")


def test_outside_the_window_a_repair_runs_and_only_its_restart_waits() -> None:
    closed = {"timeZone": "UTC", "days": ["sun"], "start": "02:00", "end": "03:00"}
    history = History(applied={KEY_S: sha(NEW), KEY_M: V2})
    actions = _one(history, live=OLD, pointer=V2, window=closed)
    assert actions["Strategy"].status == "ready" and actions["Strategy"].restart_deferred
    change = _one(History(), live=OLD, pointer=V2, window=closed)["Strategy"]
    assert (change.status, change.reason) == ("waiting", "OutsideWindow")
