"""The series a pass leaves behind: the revision at every pass, one condition per declared
object (gone with the object), build info; the exposition passes ``promtool check metrics``."""

from __future__ import annotations

import platform
import shutil
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reconciler import __version__
from reconciler.daemon.metrics import Metrics
from reconciler.execute.executor import ActionResult, PassReport
from reconciler.passes import PassOutcome
from reconciler.plan.planner import Action
from reconciler.vocabulary import ActionResult as Result
from reconciler.vocabulary import ActionStatus, Op, PassResult, Reason
from tests import builders

REVISION = "main@sha1:" + "1" * 40


def _action(name: str, *, kind: str = "Strategy", target: str = "edge", op: Op = Op.NOOP,
            status: ActionStatus = ActionStatus.READY, reason: Reason | None = None) -> Action:
    return Action(target, kind, name, op, f"{name}.py", None, "d" * 64, status=status,
                  reason=reason)


def _outcome(result: PassResult, *results: ActionResult, revision: str = REVISION,
             stopped: bool = False, targets: tuple[str, ...] = ("edge",)) -> PassOutcome:
    return PassOutcome(result, "msg", revision, PassReport(revision, results, stopped),
                       targets=tuple(builders.target(name) for name in targets))


def _row(name: str, status: str, reason: str, *, kind: str = "Strategy",
         target: str = "edge") -> dict[str, object]:
    return {"target": target, "kind": kind, "name": name, "status": status, "reason": reason}


def _samples(metrics: Metrics, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = generate_latest(metrics.registry).decode()
    found = {f.name: f for f in text_string_to_metric_families(text)}
    return {tuple(sorted(s.labels.items())): s.value for s in found[family].samples}


def _conditions(metrics: Metrics) -> dict[tuple[str, str, str], str]:
    """Each object's condition whose series is 1; asserts the one-hot shape on the way."""
    by_object: dict[tuple[str, str, str], dict[str, float]] = {}
    for labels, value in _samples(metrics, "reconciler_object_condition").items():
        seen = dict(labels)
        key = (seen["target"], seen["kind"], seen["name"])
        by_object.setdefault(key, {})[seen["condition"]] = value
    for key, values in by_object.items():
        assert sorted(values) == ["Ready", "Reconciling", "Stalled"], key
        assert sorted(values.values()) == [0, 0, 1], key
    return {key: next(c for c, v in values.items() if v == 1)
            for key, values in by_object.items()}


def test_the_revision_label_is_set_by_every_pass_that_loaded_one() -> None:
    metrics = Metrics()
    metrics.observe_pass(_outcome(PassResult.FAILED, ActionResult(
        _action("app", op=Op.UPDATE), Result.ROLLED_BACK, "health check failed")), 0.5,
        [_row("app", "Stalled", "RolledBack")])
    revision = _samples(metrics, "reconciler_last_applied_revision_info")
    assert list(revision) == [(("revision", REVISION),)], "a failed pass names its revision"
    newer = "main@sha1:" + "2" * 40
    metrics.observe_pass(_outcome(PassResult.CHANGED, ActionResult(
        _action("app", op=Op.UPDATE), Result.APPLIED, "delivered"), revision=newer), 0.5,
        [_row("app", "Ready", "Converged")])
    assert list(_samples(metrics, "reconciler_last_applied_revision_info")) == [
        (("revision", newer),)], "one series: the old label set is replaced"
    metrics.observe_pass(PassOutcome(PassResult.INVALID, "bad yaml"), 0.1, [])
    assert list(_samples(metrics, "reconciler_last_applied_revision_info")) == [
        (("revision", newer),)], "a pass that loaded no revision keeps the last one"


def test_conditions_follow_the_journal_and_removed_objects_drop_their_series() -> None:
    metrics = Metrics()
    metrics.observe_pass(_outcome(
        PassResult.WAITING,
        ActionResult(_action("app"), Result.IN_SYNC, "in sync"),
        ActionResult(_action("cfg", kind="Config", op=Op.UPDATE, status=ActionStatus.WAITING,
                             reason=Reason.SOAKING), Result.WAITING, "soaking"),
        ActionResult(_action("policy", kind="Model", op=Op.FLIP), Result.BLOCKED,
                     "gate rejected")), 1.0,
        [_row("app", "Ready", "Converged"), _row("cfg", "Reconciling", "Soaking", kind="Config"),
         _row("policy", "Stalled", "GateFailed", kind="Model")])
    assert _conditions(metrics) == {("edge", "Strategy", "app"): "Ready",
                                    ("edge", "Config", "cfg"): "Reconciling",
                                    ("edge", "Model", "policy"): "Stalled"}
    pending = {dict(k)["reason"]: v for k, v in _samples(
        metrics, "reconciler_pending_actions").items()}
    assert pending["GateFailed"] == 1, "a rejection counts in the pass that made it"
    assert pending["Soaking"] == 1 and pending["BudgetExhausted"] == 0

    # cfg is pruned, policy leaves the desired state without a prune; app stays.
    metrics.observe_pass(_outcome(
        PassResult.CHANGED,
        ActionResult(_action("app"), Result.IN_SYNC, "in sync"),
        ActionResult(_action("cfg", kind="Config", op=Op.DELETE), Result.APPLIED, "pruned")),
        1.0, [_row("app", "Ready", "Converged"), _row("cfg", "Ready", "Pruned", kind="Config"),
              _row("policy", "Stalled", "GateFailed", kind="Model")])
    assert _conditions(metrics) == {("edge", "Strategy", "app"): "Ready"}
    assert {dict(k)["reason"]: v for k, v in _samples(
        metrics, "reconciler_pending_actions").items()}["GateFailed"] == 0


def test_a_target_the_pass_did_not_reach_keeps_its_series() -> None:
    metrics = Metrics()
    both = (_row("app", "Ready", "Converged"), _row("app", "Stalled", "RolledBack",
                                                    target="prod"))
    metrics.observe_pass(_outcome(
        PassResult.FAILED, ActionResult(_action("app"), Result.IN_SYNC, "in sync"),
        ActionResult(_action("app", target="prod", op=Op.UPDATE), Result.ROLLED_BACK, "bad"),
        targets=("edge", "prod")), 1.0, both)
    # prod could not be observed: no action for it; a stopped pass is no census either.
    metrics.observe_pass(_outcome(
        PassResult.FAILED, ActionResult(_action("app"), Result.IN_SYNC, "in sync"),
        targets=("edge", "prod")), 1.0, both)
    metrics.observe_pass(_outcome(PassResult.FAILED, stopped=True, targets=("edge", "prod")),
                         1.0, both)
    assert _conditions(metrics) == {("edge", "Strategy", "app"): "Ready",
                                    ("prod", "Strategy", "app"): "Stalled"}
    # prod is no longer declared at all: its objects go.
    metrics.observe_pass(_outcome(
        PassResult.CONVERGED, ActionResult(_action("app"), Result.IN_SYNC, "in sync")), 1.0,
        both)
    assert _conditions(metrics) == {("edge", "Strategy", "app"): "Ready"}


def test_build_info_and_loop_health_and_promtool_accepts_the_exposition() -> None:
    metrics = Metrics()
    alive = [True]
    metrics.follow_liveness(lambda: alive[0])
    metrics.observe_pass(_outcome(PassResult.CONVERGED, ActionResult(
        _action("app"), Result.IN_SYNC, "in sync")), 0.2, [_row("app", "Ready", "Converged")])
    assert _samples(metrics, "reconciler_build_info") == {
        (("python", platform.python_version()), ("version", __version__)): 1.0}
    assert _samples(metrics, "reconciler_loop_healthy") == {(): 1.0}
    alive[0] = False
    assert _samples(metrics, "reconciler_loop_healthy") == {(): 0.0}
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/test.sh installs Debian's prometheus")
    checked = subprocess.run([promtool, "check", "metrics"],
                             input=generate_latest(metrics.registry), capture_output=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_analysis_holds_count_among_pending_actions() -> None:
    """A change held by an inconclusive (or failed, or impossible) analysis during the soak
    waits for a person: ``reconciler_pending_actions`` names why, so that an alert can."""
    metrics = Metrics()
    metrics.observe_pass(_outcome(
        PassResult.WAITING,
        ActionResult(_action("policy", kind="Model", op=Op.FLIP,
                             status=ActionStatus.BLOCKED, reason=Reason.FAILED_BEFORE),
                     Result.BLOCKED, "held: inconclusive"),
        ActionResult(_action("app", op=Op.UPDATE), Result.ROLLED_BACK, "error rate"),
        ActionResult(_action("cfg", kind="Config", op=Op.UPDATE), Result.BLOCKED, "no data")),
        1.0, [_row("policy", "Stalled", "AnalysisInconclusive", kind="Model"),
              _row("app", "Stalled", "AnalysisFailed"),
              _row("cfg", "Stalled", "AnalysisUnavailable", kind="Config")])
    pending = {dict(k)["reason"]: v for k, v in _samples(
        metrics, "reconciler_pending_actions").items()}
    assert pending["AnalysisInconclusive"] == 1
    assert pending["AnalysisFailed"] == 1 and pending["AnalysisUnavailable"] == 1
