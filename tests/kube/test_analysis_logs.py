"""Log checks on Kubernetes: the new pods' logs, read through the official client from the
emulated API server. Errors logged by the new revision's pods roll it back; old pods'
errors do not count."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from reconciler.kube.fleet import template_annotation
from reconciler.kube.place import PodLogs
from tests.kube.world import STRATEGY_V1, STRATEGY_V2, KubeWorld, strategy_doc

V2_DIGEST = hashlib.sha256(STRATEGY_V2.encode()).hexdigest()
ANNOTATION = template_annotation("Strategy", "gepetto")


def with_log_check(world: KubeWorld) -> None:
    document = json.loads(strategy_doc(["cluster-a"], soak="600ms"))
    document["spec"]["analysis"] = [{"name": "errors", "interval": "200ms",
                                     "log": {"pattern": "Traceback|ERROR", "maxCount": 0}}]
    world.write("strategies/gepetto.yaml", json.dumps(document))


def runs_v2(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("annotations", {}).get(ANNOTATION) == V2_DIGEST)


def gepetto(world: KubeWorld) -> dict[str, Any]:
    journal = world.journal()
    try:
        row = journal.object(("cluster-a", "Strategy", "gepetto"))
        analysis = journal.analyses().get(("cluster-a", "Strategy", "gepetto"))
    finally:
        journal.close()
    assert row is not None
    return {**row, "analysis": analysis}


def test_errors_in_the_new_pods_logs_roll_the_change_back(world: KubeWorld) -> None:
    world.basic(soak="600ms")
    world.commit()
    world.apply()
    # Old pods log errors all the time; only the new revision's pods are judged.
    world.emulator.pod_log = lambda pod: ("INFO serving\nERROR boom\n" if runs_v2(pod)
                                          else "ERROR old and known\n")
    with_log_check(world)
    world.write("strategies/gepetto.py", STRATEGY_V2)
    world.commit("v2 logs errors")
    outcome = world.apply()
    assert outcome.report is not None
    result = next(r for r in outcome.report.results if r.action.kind == "Strategy")
    assert result.result == "rolled-back"
    assert "check errors (log the new pods' logs =~ /Traceback|ERROR/)" in result.message
    assert world.configmap("gepetto-code")["data"]["gepetto.py"] == STRATEGY_V1  # type: ignore
    analysis = gepetto(world)["analysis"]
    assert analysis["outcome"] == "fail"
    # Two new pods, one error line each.
    assert analysis["checks"]["errors"]["measurements"][-1]["value"] == 2.0


def test_quiet_new_pods_are_applied_though_old_pods_logged_errors(world: KubeWorld) -> None:
    world.basic(soak="600ms")
    world.commit()
    world.apply()
    world.emulator.pod_log = lambda pod: ("INFO serving\n" if runs_v2(pod)
                                          else "ERROR old and known\n")
    with_log_check(world)
    world.write("strategies/gepetto.py", STRATEGY_V2)
    world.commit("v2 is quiet")
    outcome = world.apply()
    assert outcome.report is not None
    result = next(r for r in outcome.report.results if r.action.kind == "Strategy")
    assert result.result == "applied", result.message
    row = gepetto(world)
    assert row["analysis"]["outcome"] == "pass"
    assert row["analysis"]["checks"]["errors"]["taken"] == 3  # 600ms soak / 200ms
    assert world.configmap("gepetto-code")["data"]["gepetto.py"] == STRATEGY_V2  # type: ignore


def test_a_restarted_container_s_log_is_read_from_its_first_line() -> None:
    """The API gives the current container's log: after a crash and restart it is shorter
    than what was read, and its lines (the errors that matter most) must still count."""
    answers = [{"app-1": "INFO a\nINFO b\nINFO c\n"}, {"app-1": "ERROR boom\n"},
               {"app-1": "ERROR boom\nINFO d\n"}]
    logs = PodLogs(lambda: answers.pop(0), "deployment/app")
    assert logs.lines() == ["INFO a", "INFO b", "INFO c"]
    assert logs.lines() == ["ERROR boom"]
    assert logs.lines() == ["INFO d"]
