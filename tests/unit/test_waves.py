"""Waves in the pure planner: who waits for how many, and what a failure takes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.desired.documents import After, Desired
from reconciler.journal import Journal
from reconciler.plan.planner import Action, History, Plan, chains, plan, wave_numbers
from reconciler.plan.render import render_json, render_text
from reconciler.vocabulary import ActionStatus, Op, Reason
from tests.builders import REVISION, desired, model, observed, sha, strategy, target

OLD, NEW = b"old strategy\n", b"new strategy\n"
PATH = "strategies/gepetto.py"
HOUR = 3600.0
FLEET = ("canary", "s1", "s2", "r1", "r2")


def _fleet(rest_after: dict[str, Any] | str = "s1") -> Desired:
    """canary, then s1 and s2 (a soak after the canary), then r1 and r2 after them."""
    targets = (target("canary"), target("s1", after="canary", soak="10m"),
               target("s2", after="canary", soak="10m"),
               target("r1", after=rest_after, soak="30m"), target("r2", after=rest_after))
    return desired(targets=targets, strategies=(strategy(targets=FLEET),),
                   contents={"gepetto": NEW})


def _observed(holding: dict[str, bytes | None]) -> dict[str, Any]:
    return {name: observed(name, files={PATH: sha(content) if content else None})
            for name, content in holding.items()}


def _by_target(result: Plan) -> dict[str, Action]:
    return {action.target: action for action in result.actions}


def _key(name: str) -> tuple[str, str, str]:
    return (name, "Strategy", "gepetto")


def test_a_share_rounds_up_to_whole_targets() -> None:
    assert After(("a", "b", "c", "d", "e"), share=__import__("fractions").Fraction(25)
                 ).needed(5) == 2
    targets = (*(target(f"w{i}") for i in range(5)),
               target("rest", after={"targets": [f"w{i}" for i in range(5)], "healthy": "25%"},
                      soak="1h"))
    state = desired(targets=targets,
                    strategies=(strategy(targets=(*(f"w{i}" for i in range(5)), "rest")),),
                    contents={"gepetto": NEW})
    holding: dict[str, bytes | None] = {**{f"w{i}": NEW for i in range(5)}, "rest": OLD}
    one = History(healthy_since={_key("w0"): (sha(NEW), 0.0)})
    waiting = _by_target(plan(state, _observed(holding), one, 10 * HOUR))["rest"]
    assert (waiting.status, waiting.reason) == (ActionStatus.WAITING,
                                                Reason.UPSTREAM_NOT_HEALTHY)
    assert "25% of w0, w1, w2, w3, w4" in (waiting.message or "")
    assert "(1 of 2 so far)" in (waiting.message or "")
    assert waiting.wave is not None and (waiting.wave.needed, waiting.wave.healthy) == (2, 1)

    two = History(healthy_since={_key("w0"): (sha(NEW), 0.0), _key("w3"): (sha(NEW), HOUR)})
    soaking = _by_target(plan(state, _observed(holding), two, 1.5 * HOUR))["rest"]
    assert soaking.reason is Reason.SOAKING and soaking.not_before == 2 * HOUR
    ready = _by_target(plan(state, _observed(holding), two, 2 * HOUR))["rest"]
    assert (ready.op, ready.status) == (Op.UPDATE, ActionStatus.READY)


def test_a_count_of_a_set() -> None:
    state = _fleet({"targets": ["s1", "s2"], "healthy": 1})
    holding = {"canary": NEW, "s1": NEW, "s2": OLD, "r1": OLD, "r2": OLD}
    history = History(healthy_since={_key("canary"): (sha(NEW), 0.0),
                                     _key("s1"): (sha(NEW), HOUR)})
    actions = _by_target(plan(state, _observed(holding), history, 3 * HOUR))
    assert actions["r1"].status is ActionStatus.READY  # one of s1, s2 is enough
    assert actions["r2"].status is ActionStatus.READY
    assert actions["s2"].status is ActionStatus.READY
    assert actions["r1"].wave is not None and actions["r1"].wave.to_json() == {
        "wave": 3, "after": ["s1", "s2"], "needed": 1, "healthy": 1}


def test_the_single_name_form_is_the_set_of_one() -> None:
    state = _fleet()
    assert state.targets["s1"].after == After(("canary",))
    holding = {"canary": NEW, "s1": OLD, "s2": OLD, "r1": OLD, "r2": OLD}
    waiting = _by_target(plan(state, _observed(holding), History(), 0.0))["s1"]
    assert waiting.message == ("waits until canary is healthy with this content, then soaks "
                               "10m")


def test_waves_and_chains_follow_after() -> None:
    state = _fleet({"targets": ["s1", "s2"]})
    members = frozenset(FLEET)
    assert wave_numbers(state.targets, members) == {"canary": 1, "s1": 2, "s2": 2, "r1": 3,
                                                    "r2": 3}
    assert set(chains(state.targets, members).values()) == {members}
    # Targets the object is not sent to break a chain: s1 alone waits for nothing.
    assert chains(state.targets, frozenset({"s1", "r2"}))["s1"] == frozenset({"s1", "r2"})
    assert wave_numbers(state.targets, frozenset({"s1", "canary"})) == {"canary": 1, "s1": 2}
    assert chains(state.targets, frozenset({"canary", "r2"}))["canary"] == {"canary"}


def _failed_in_second_wave() -> tuple[Desired, dict[str, Any], History]:
    """The canary and s1 took the new content; it failed on s2 and was rolled back there."""
    state = _fleet({"targets": ["s1", "s2"]})
    new = sha(NEW)
    holding = {"canary": NEW, "s1": NEW, "s2": OLD, "r1": OLD, "r2": OLD}
    history = History(
        applied={_key("canary"): new, _key("s1"): new, _key("s2"): sha(OLD),
                 _key("r1"): sha(OLD), _key("r2"): sha(OLD)},
        failed={_key("s2"): (new, REVISION)},
        healthy_since={_key("canary"): (new, 0.0), _key("s1"): (new, HOUR)},
        recall_to={_key("canary"): (new, sha(OLD)), _key("s1"): (new, None)})
    return state, holding, history


def test_a_failing_second_wave_recalls_the_canary_and_the_second_wave_and_holds_the_rest(
        ) -> None:
    state, holding, history = _failed_in_second_wave()
    actions = _by_target(plan(state, _observed(holding), history, 5 * HOUR))
    for name, back in (("canary", sha(OLD)), ("s1", "")):
        recall = actions[name]
        assert (recall.op, recall.status) == (Op.RECALL, ActionStatus.READY)
        assert (recall.current, recall.desired) == (sha(NEW), back)
        assert [step.kind for step in recall.steps] == ["recall", "restart", "health"]
        assert "failed on s2 (wave 2)" in (recall.message or "")
    assert actions["s2"].reason is Reason.FAILED_BEFORE
    for later in ("r1", "r2"):
        assert (actions[later].status, actions[later].reason) == (ActionStatus.BLOCKED,
                                                                  Reason.WAVE_FAILED)
        assert "held: this revision failed on s2" in (actions[later].message or "")
    text = render_text(plan(state, _observed(holding), history, 5 * HOUR), {}, {})
    assert "< Strategy gepetto: recall file strategies/gepetto.py" in text
    assert "2 to recall" in text


def test_a_recalled_target_is_blocked_not_retried_and_a_new_commit_tries_again() -> None:
    state, _, history = _failed_in_second_wave()
    new = sha(NEW)
    recalled = History(
        applied={key: digest for key, digest in history.applied.items() if key != _key("s1")}
        | {_key("canary"): sha(OLD)},
        failed={**history.failed, _key("canary"): (new, REVISION), _key("s1"): (new, REVISION)},
        healthy_since={_key("canary"): (sha(OLD), 6 * HOUR)})
    holding = {"canary": OLD, "s1": None, "s2": OLD, "r1": OLD, "r2": OLD}
    actions = _by_target(plan(state, _observed(holding), recalled, 7 * HOUR))
    assert {name: (a.op, a.reason) for name, a in actions.items()} == {
        "canary": (Op.UPDATE, Reason.FAILED_BEFORE), "s1": (Op.CREATE, Reason.FAILED_BEFORE),
        "s2": (Op.UPDATE, Reason.FAILED_BEFORE), "r1": (Op.UPDATE, Reason.WAVE_FAILED),
        "r2": (Op.UPDATE, Reason.WAVE_FAILED)}
    again = _by_target(plan(_fleet_at("main@sha1:" + "d" * 40), _observed(holding), recalled,
                            7 * HOUR))
    assert (again["canary"].op, again["canary"].status) == (Op.UPDATE, ActionStatus.READY)
    assert again["s1"].reason is Reason.UPSTREAM_NOT_HEALTHY


def _fleet_at(revision: str) -> Desired:
    from dataclasses import replace
    return replace(_fleet({"targets": ["s1", "s2"]}), revision=revision)


def test_a_target_whose_content_before_is_unknown_is_held_not_guessed() -> None:
    state, holding, history = _failed_in_second_wave()
    unknown = History(applied=history.applied, failed=history.failed,
                      healthy_since=history.healthy_since,
                      recall_to={_key("s1"): (sha(NEW), None)})
    actions = _by_target(plan(state, _observed(holding), unknown, 5 * HOUR))
    assert (actions["canary"].op, actions["canary"].status) == (Op.NOOP, ActionStatus.BLOCKED)
    assert "not in the journal" in (actions["canary"].message or "")
    assert actions["s1"].op is Op.RECALL


def test_targets_that_do_not_wait_for_each_other_are_not_recalled() -> None:
    """Without ``after`` each target is its own rollout: as before waves."""
    state = desired(targets=(target("a"), target("b")),
                    strategies=(strategy(targets=("a", "b")),), contents={"gepetto": NEW})
    new = sha(NEW)
    history = History(applied={_key("a"): new}, failed={_key("b"): (new, REVISION)},
                      healthy_since={_key("a"): (new, 0.0)}, recall_to={_key("a"): (new, None)})
    actions = _by_target(plan(state, _observed({"a": NEW, "b": OLD}), history, HOUR))
    assert (actions["a"].op, actions["a"].wave) == (Op.NOOP, None)
    assert actions["b"].reason is Reason.FAILED_BEFORE


def test_a_model_is_recalled_to_the_digest_it_pointed_at() -> None:
    v1, v2 = "1" * 64, "2" * 64
    state = desired(targets=(target("canary"), target("rest", after="canary")),
                    models=(model(digest=v2, targets=("canary", "rest")),))
    history = History(applied={("canary", "Model", "policy"): v2},
                      failed={("rest", "Model", "policy"): (v2, REVISION)},
                      recall_to={("canary", "Model", "policy"): (v2, v1)})
    fleet = {"canary": observed("canary", pointers={"models/policy.pt": v2}),
             "rest": observed("rest", pointers={"models/policy.pt": v1})}
    result = plan(state, fleet, history, 0.0)
    canary = _by_target(result)["canary"]
    assert (canary.op, canary.current, canary.desired) == (Op.RECALL, v2, v1)
    assert '"op": "recall"' in render_json(result, {}, {})


def test_plan_spend_waits_for_the_count_a_wave_asks_for_not_all_of_it() -> None:
    """s1 comes 10m after the canary, s2 30m after; r1 waits for one of them and soaks 1h:
    it is done after 10m + 1h (all of them would be 30m + 1h)."""
    from reconciler.plan.spend import spend

    targets = (target("canary"), target("s1", after="canary", soak="10m"),
               target("s2", after="canary", soak="30m"),
               target("r1", after={"targets": ["s1", "s2"], "healthy": 1}, soak="1h"))
    state = desired(targets=targets,
                    strategies=(strategy(targets=("canary", "s1", "s2", "r1"), health=False),),
                    contents={"gepetto": NEW})
    holding: dict[str, bytes | None] = {name: OLD for name in ("canary", "s1", "s2", "r1")}
    made = plan(state, _observed(holding), History(), 0.0)
    spent = spend(made, state, History(), 0.0, gate_costs={}, rates={}, remembered={},
                  gpu_used_today=0)
    assert spent.longest_seconds == 600 + HOUR
    assert [hold.subject for hold in spent.holds if hold.target == "r1"] == ["after s1, s2"]


def test_a_suspended_target_keeps_even_a_failed_revision_until_it_is_resumed() -> None:
    from dataclasses import replace

    from reconciler.plan.planner import Suspension

    state, holding, history = _failed_in_second_wave()
    stopped = replace(history, suspended={"canary": Suspension("canary", "ops", 0.0,
                                                                 "investigating")})
    actions = _by_target(plan(state, _observed(holding), stopped, 5 * HOUR))
    assert (actions["canary"].op, actions["canary"].status, actions["canary"].reason) == (
        Op.RECALL, ActionStatus.WAITING, Reason.SUSPENDED)
    assert "recall of file strategies/gepetto.py waits" in (actions["canary"].message or "")
    assert (actions["s1"].op, actions["s1"].status) == (Op.RECALL, ActionStatus.READY)
    assert actions["r1"].reason is Reason.WAVE_FAILED


def test_an_inconclusive_analysis_in_a_later_wave_holds_and_recalls_nothing(
        tmp_path: Path) -> None:
    """Inconclusive is held, never rolled back (docs/analysis.md): its mark keeps the
    revision from being analysed again on that target, but it is no wave that failed, so
    the canary and the rest of the wave keep what they took. A failure still recalls."""
    state = _fleet({"targets": ["s1", "s2"]})
    new, old = sha(NEW), sha(OLD)
    holding = {"canary": NEW, "s1": NEW, "s2": NEW, "r1": OLD, "r2": OLD}
    journal = Journal(tmp_path / "journal.db")
    try:
        pass_id = journal.begin_pass(REVISION)
        for name in ("canary", "s1", "s2"):
            journal.intent("deliver", _key(name), pass_id=pass_id, revision=REVISION,
                           detail={"from": old, "to": new})
            journal.applied(_key(name), new, REVISION, 0.0)
        journal.failed(_key("s2"), new, REVISION, Reason.ANALYSIS_INCONCLUSIVE,
                       "error-rate: no data; held")
        actions = _by_target(plan(state, _observed(holding), journal.history(HOUR), HOUR))
        assert {name: actions[name].op for name in ("canary", "s1")} == {
            "canary": Op.NOOP, "s1": Op.NOOP}
        assert actions["r1"].reason is Reason.UPSTREAM_NOT_HEALTHY
        journal.failed(_key("s2"), new, REVISION, Reason.ROLLED_BACK, "error rate rose")
        actions = _by_target(plan(state, _observed(holding), journal.history(HOUR), HOUR))
        assert actions["canary"].op is Op.RECALL
    finally:
        journal.close()
