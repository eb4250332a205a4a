"""The planner is pure: these tests build its inputs directly."""

from __future__ import annotations

from typing import Any

from reconciler.desired.documents import Desired, Origin, build
from reconciler.plan.observed import ObservedFile, ObservedPointer, ObservedTarget
from reconciler.plan.planner import Action, History, ordered_targets, plan
from reconciler.plan.render import render_step

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
MODEL_V1 = "1" * 64
MODEL_V2 = "2" * 64
ORIGIN = Origin("f.yaml", "0" * 40, 0, 1)
REVISION = "main@sha1:" + "c" * 40


def _doc(kind: str, name: str, spec: dict[str, Any]) -> Any:
    return build(kind, {"metadata": {"name": name}, "spec": spec}, ORIGIN)


def desired(model_digest: str = MODEL_V2, strategy_digest: str = DIGEST_B) -> Desired:
    staging = _doc("Target", "staging", {"local": {"root": "s"}})
    production = _doc("Target", "production", {"local": {"root": "p"}, "after": "staging",
                                               "soak": "30m"})
    strategy = _doc("Strategy", "gepetto", {
        "source": "gepetto.py", "targets": ["staging", "production"],
        "deliver": {"path": "strategies/gepetto.py"},
        "restart": {"command": ["systemctl", "restart", "gepetto"]},
        "health": {"http": {"url": "http://127.0.0.1:8080/healthz"}, "soak": "5m"}})
    model = _doc("Model", "policy", {
        "targets": ["staging", "production"],
        "artifact": {"uri": "m.pt", "sha256": model_digest},
        "pointer": {"path": "models/canonical.pt"}, "gauntlet": "gate"})
    return Desired(REVISION, {"staging": staging, "production": production},
                   {"gepetto": strategy}, {}, {"policy": model}, {}, {},
                   {("Strategy", "gepetto"): strategy_digest}, lambda obj: b"",
                   lambda path: b"")


def observed(strategy: dict[str, str | None], model: dict[str, str | None]
             ) -> dict[str, ObservedTarget]:
    return {name: ObservedTarget(
        name, f"/fleet/{name}",
        {"strategies/gepetto.py": ObservedFile("strategies/gepetto.py", strategy[name])},
        {"models/canonical.pt": ObservedPointer("models/canonical.pt", None, model[name])})
        for name in ("staging", "production")}


def _steps(action: Action) -> tuple[str, ...]:
    return tuple(render_step(step) for step in action.steps)


def _ops(result: Any) -> list[tuple[str, str, str, str]]:
    return [(a.target, a.kind, a.op, a.status) for a in result.actions]


def test_fresh_fleet_creates_on_staging_and_waits_on_production() -> None:
    result = plan(desired(), observed({"staging": None, "production": None},
                                      {"staging": None, "production": None}), History(), 0.0)
    assert _ops(result) == [
        ("staging", "Strategy", "create", "ready"), ("staging", "Model", "flip", "ready"),
        ("production", "Strategy", "create", "waiting"),
        ("production", "Model", "flip", "waiting")]
    staging_strategy = result.actions[0]
    assert _steps(staging_strategy) == ("restart: systemctl restart gepetto",
                                      "health: GET http://127.0.0.1:8080/healthz, soak 5m")
    assert _steps(result.actions[1]) == ("verify sha256", "gauntlet gate")
    assert result.actions[2].reason == "UpstreamNotHealthy"
    assert "staging is healthy with this content" in (result.actions[2].message or "")
    assert not result.in_sync


def test_in_sync_fleet_plans_no_change() -> None:
    both = {"staging": DIGEST_B, "production": DIGEST_B}
    models = {"staging": MODEL_V2, "production": MODEL_V2}
    result = plan(desired(), observed(both, models), History(), 0.0)
    assert result.in_sync
    assert {a.op for a in result.actions} == {"noop"}


def test_drift_is_an_update_back_to_what_was_applied() -> None:
    fleet = observed({"staging": DIGEST_A, "production": DIGEST_B},
                     {"staging": MODEL_V2, "production": MODEL_V2})
    [change] = plan(desired(), fleet, History(), 0.0).changes
    assert (change.target, change.op, change.current, change.desired) == (
        "staging", "update", DIGEST_A, DIGEST_B)
    assert not change.drift  # never applied by us: a change, not drift
    applied = History(applied={("staging", "Strategy", "gepetto"): DIGEST_B})
    [drift] = plan(desired(), fleet, applied, 0.0).changes
    assert drift.drift


def test_soak_releases_production_only_after_staging_was_healthy_long_enough() -> None:
    fleet = observed({"staging": DIGEST_B, "production": DIGEST_A},
                     {"staging": MODEL_V2, "production": MODEL_V2})
    healthy = History(healthy_since={("staging", "Strategy", "gepetto"): (DIGEST_B, 1000.0)})
    soaking = plan(desired(), fleet, healthy, now=1000.0 + 29 * 60)
    [change] = soaking.changes
    assert (change.status, change.not_before) == ("waiting", 1000.0 + 30 * 60)
    assert change.reason == "Soaking"
    assert "soaking on staging for 30m" in (change.message or "")
    ready = plan(desired(), fleet, healthy, now=1000.0 + 30 * 60)
    assert ready.changes[0].status == "ready"


def test_health_on_staging_with_other_content_does_not_release_production() -> None:
    fleet = observed({"staging": DIGEST_B, "production": DIGEST_A},
                     {"staging": MODEL_V2, "production": MODEL_V2})
    stale = History(healthy_since={("staging", "Strategy", "gepetto"): (DIGEST_A, 0.0)})
    assert plan(desired(), fleet, stale, now=1e9).changes[0].status == "waiting"


def test_a_failed_revision_is_blocked_until_a_new_commit() -> None:
    fleet = observed({"staging": DIGEST_A, "production": DIGEST_A},
                     {"staging": MODEL_V2, "production": MODEL_V2})
    failed = History(failed={("staging", "Strategy", "gepetto"): (DIGEST_B, REVISION)})
    blocked = plan(desired(), fleet, failed, 0.0).changes[0]
    assert (blocked.target, blocked.status) == ("staging", "blocked")
    assert blocked.reason == "FailedBefore"
    assert "not retried until a new commit" in (blocked.message or "")
    fixed = plan(desired(strategy_digest="c" * 64), fleet, failed, 0.0).changes[0]
    assert fixed.status == "ready"
    from dataclasses import replace
    new_commit = replace(desired(), revision="main@sha1:" + "d" * 40)
    assert plan(new_commit, fleet, failed, 0.0).changes[0].status == "ready"


def test_returning_to_a_known_good_model_skips_the_gate_but_not_the_digest_check() -> None:
    fleet = observed({"staging": DIGEST_B, "production": DIGEST_B},
                     {"staging": MODEL_V2, "production": MODEL_V2})
    history = History(known_good={"policy": frozenset({MODEL_V1})})
    flip = plan(desired(model_digest=MODEL_V1), fleet, history, 0.0).changes[0]
    assert _steps(flip) == ("verify sha256", "gate skipped: canonical before")


def test_unobservable_target_is_an_error_not_a_change() -> None:
    fleet = observed({"staging": DIGEST_B, "production": DIGEST_B},
                     {"staging": MODEL_V2, "production": MODEL_V2})
    fleet["production"] = ObservedTarget("production", "/x", {}, {}, error="permission denied")
    result = plan(desired(), fleet, History(), 0.0)
    assert result.errors == {"production": "permission denied"}
    assert not result.in_sync
    assert all(a.target == "staging" for a in result.actions)


def test_targets_are_ordered_upstream_first() -> None:
    targets = {name: _doc("Target", name, {"local": {"root": name},
                                           **({"after": after} if after else {})})
               for name, after in [("a-prod", "b-canary"), ("b-canary", "c-staging"),
                                   ("c-staging", None), ("d-lab", None)]}
    assert [t.name for t in ordered_targets(targets)] == ["c-staging", "d-lab", "b-canary",
                                                          "a-prod"]


def test_restarts_and_flips_wait_for_the_window_and_plain_deliveries_do_not() -> None:
    from dataclasses import replace
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from reconciler.desired.documents import Window

    state = desired()
    windowed = replace(state.targets["staging"],
                       window=Window("Europe/Berlin", ("mon", "tue", "wed", "thu", "fri"),
                                     "02:00", "05:00"))
    state = replace(state, targets={**state.targets, "staging": windowed})
    fleet = observed({"staging": None, "production": None}, {"staging": None, "production": None})
    berlin = ZoneInfo("Europe/Berlin")
    saturday_noon = datetime(2026, 11, 21, 12, 0, tzinfo=berlin).timestamp()
    staging = [a for a in plan(state, fleet, History(), saturday_noon).actions
               if a.target == "staging"]
    assert [(a.kind, a.status, a.reason) for a in staging] == [
        ("Strategy", "waiting", "OutsideWindow"), ("Model", "waiting", "OutsideWindow")]
    monday_two = datetime(2026, 11, 23, 2, 0, tzinfo=berlin).timestamp()
    assert staging[0].not_before == monday_two
    inside = datetime(2026, 11, 24, 3, 30, tzinfo=berlin).timestamp()
    assert all(a.status == "ready" for a in plan(state, fleet, History(), inside).actions
               if a.target == "staging")


def test_content_written_but_never_restarted_is_not_in_sync() -> None:
    both = {"staging": DIGEST_B, "production": DIGEST_B}
    models = {"staging": MODEL_V2, "production": MODEL_V2}
    history = History(applied={("production", "Strategy", "gepetto"): DIGEST_B},
                      unfinished={("staging", "Strategy", "gepetto"): DIGEST_B,
                                  ("staging", "Model", "policy"): MODEL_V1})
    [finish] = plan(desired(), observed(both, models), history, 0.0).changes
    assert (finish.target, finish.kind, finish.op) == ("staging", "Strategy", "update")
    assert _steps(finish)[0].startswith("finish:") and _steps(finish)[1].startswith("restart:")
    # The model's unfinished digest is not the one live and declared: nothing owed there.


def test_an_unfinished_pointer_flip_is_flipped_again() -> None:
    history = History(unfinished={("staging", "Model", "policy"): MODEL_V2})
    model = desired()
    restarted = Desired(model.revision, model.targets, model.strategies, model.configs,
                        {"policy": _doc("Model", "policy", {
                            "targets": ["staging"], "artifact": {"uri": "m.pt",
                                                                 "sha256": MODEL_V2},
                            "pointer": {"path": "models/canonical.pt"},
                            "restart": {"command": ["true"]}})},
                        {}, {}, model.content_digests, model.read_content, model.read_file)
    fleet = observed({"staging": DIGEST_B, "production": DIGEST_B},
                     {"staging": MODEL_V2, "production": MODEL_V2})
    changes = plan(restarted, fleet, history, 0.0).changes
    assert [(a.target, a.kind, a.op) for a in changes] == [("staging", "Model", "flip")]
