"""Canonical pointer ConfigMaps (preconditions, conflicts, rollback) and API faults."""

from __future__ import annotations

import hashlib
import json

import pytest

from reconciler.execute.executor import Hooks
from reconciler.kube.fleet import template_annotation
from tests.kube.world import (
    MODEL_V1,
    MODEL_V2,
    NAMESPACE,
    STRATEGY_V1,
    KubeWorld,
    model_doc,
    target_doc,
)

MODEL_V2_DIGEST = hashlib.sha256(MODEL_V2).hexdigest()


def _pointer(world: KubeWorld) -> dict[str, str]:
    found = world.configmap("canonical-models")
    assert found is not None
    return json.loads(found["data"]["connect4-policy"])  # type: ignore[no-any-return]


def _events(world: KubeWorld, action: str) -> list[dict[str, object]]:
    journal = world.journal()
    try:
        return [e.to_json() for e in journal.events() if e.action == action]
    finally:
        journal.close()


def test_a_pointer_changed_under_us_is_re_read_and_re_planned(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    assert world.apply().result == "changed"
    world.write("models/policy-v2.bin", MODEL_V2)
    world.write("models/connect4.yaml", model_doc(["cluster-a"], "models/policy-v2.bin",
                                                  MODEL_V2))
    world.commit("promote v2")
    raced: list[str] = []

    def someone_else_writes_first(text: str) -> None:
        if text.startswith("flip") and not raced:
            live = world.configmap("canonical-models")
            assert live is not None
            live["data"]["connect4-policy"] = json.dumps({"sha256": "e" * 64, "uri": "x"})
            world.emulator.put("configmaps", live)
            raced.append(live["metadata"]["resourceVersion"])

    outcome = world.apply(Hooks(progress=someone_else_writes_first))
    assert raced, "the race was staged"
    assert outcome.result == "changed", outcome.message
    assert _pointer(world)["sha256"] == MODEL_V2_DIGEST
    conflicts = [e for e in _events(world, "error")
                 if e["detail"]["reason"] == "PointerConflict"]  # type: ignore[index]
    assert len(conflicts) == 1


def test_a_model_whose_rollout_fails_puts_the_previous_pointer_back(world: KubeWorld) -> None:
    world.basic()
    world.write("models/connect4.yaml", model_doc(
        ["cluster-a"], "models/policy.bin", MODEL_V1,
        restart={"deployment": "gepetto", "timeout": "2s"}))
    world.commit()
    assert world.apply().result == "changed"
    before = world.configmap("canonical-models")["data"]["connect4-policy"]  # type: ignore
    annotation = template_annotation("Model", "connect4-policy")
    world.emulator.pod_behavior = lambda template: "CrashLoopBackOff" if template[
        "metadata"].get("annotations", {}).get(annotation) == MODEL_V2_DIGEST else "Ready"
    world.write("models/policy-v2.bin", MODEL_V2)
    world.write("models/connect4.yaml", model_doc(
        ["cluster-a"], "models/policy-v2.bin", MODEL_V2,
        restart={"deployment": "gepetto", "timeout": "2s"}))
    world.commit("a model the pods cannot load")
    outcome = world.apply()
    assert outcome.result == "failed"
    assert "CrashLoopBackOff" in outcome.message and "pointer flipped back" in outcome.message
    assert world.configmap("canonical-models")["data"]["connect4-policy"] == before  # type: ignore


def test_server_errors_back_off_and_leave_no_failure_mark(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.emulator.fail("GET", "configmaps", 500)
    observed = world.apply()
    assert observed.result == "transient" and "ApiUnavailable" in observed.message
    assert world.configmap("gepetto-code") is None
    world.emulator.fail("PATCH", "configmaps", 503)
    written = world.apply()
    assert written.result == "transient", written.message
    journal = world.journal()
    try:
        assert all(o["failed_digest"] is None for o in journal.objects())
    finally:
        journal.close()
    assert world.apply().result == "changed"
    assert world.configmap("gepetto-code")["data"] == {"gepetto.py": STRATEGY_V1}  # type: ignore


def test_a_request_that_never_answers_times_out_as_transient(world: KubeWorld) -> None:
    world.basic()
    world.write_settings(kubernetes={"kubeconfig": str(world.kubeconfig),
                                     "requestTimeout": "500ms", "pollInterval": "50ms"})
    world.commit()
    world.emulator.fail("GET", "configmaps", 0)
    outcome = world.apply()
    assert outcome.result == "transient"
    assert "ApiUnreachable" in outcome.message and "list configmaps" in outcome.message


def test_a_conflict_on_a_plain_write_is_retried(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.emulator.fail("PATCH", "configmaps", 409)
    assert world.apply().result == "changed"
    assert world.emulator.counters.by_kind[("PATCH", "configmaps")] == 4, "3 objects, 1 retry"
    assert world.configmap("gepetto-settings") is not None


@pytest.mark.parametrize("method, verb", [("PATCH", "patch"), ("GET", "list")])
def test_forbidden_is_stalled_and_names_verb_and_resource(world: KubeWorld, method: str,
                                                          verb: str) -> None:
    world.basic()
    world.commit()
    world.emulator.fail(method, "configmaps", 403, times=10,
                        message='configmaps is forbidden: User "system:serviceaccount:ml:'
                                'reconciler" cannot patch resource "configmaps"')
    outcome = world.apply()
    assert outcome.result == "failed"
    assert "Forbidden" in outcome.message
    assert f"grant verb '{verb}' on resource 'configmaps'" in outcome.message


def test_a_missing_namespace_is_a_clear_error(world: KubeWorld) -> None:
    world.basic()
    world.write("targets.yaml", target_doc("cluster-a", "absent"))
    world.commit()
    outcome = world.apply()
    assert outcome.result == "failed"
    assert "namespace 'absent' does not exist" in outcome.message
    journal = world.journal()
    try:
        reasons = {o["reason"] for o in journal.objects()}
    finally:
        journal.close()
    assert "NamespaceNotFound" in reasons


def test_an_outage_between_write_and_restart_is_finished_on_the_next_pass(
        world: KubeWorld) -> None:
    world.basic()
    world.commit()
    assert world.apply().result == "changed"
    world.write("strategies/gepetto.py", STRATEGY_V1.replace("[:3]", "[:5]"))
    world.commit()
    world.emulator.fail("PATCH", "deployments", 503)
    interrupted = world.apply()
    assert interrupted.result == "transient", interrupted.message
    annotation = template_annotation("Strategy", "gepetto")
    new_digest = hashlib.sha256(STRATEGY_V1.replace("[:3]", "[:5]").encode()).hexdigest()
    template = world.emulator.get("deployments", NAMESPACE, "gepetto")["spec"]["template"]
    assert template["metadata"]["annotations"][annotation] != new_digest, "not restarted yet"
    finished = world.apply()
    assert finished.result == "changed", "the live content matches, yet the restart is owed"
    template = world.emulator.get("deployments", NAMESPACE, "gepetto")["spec"]["template"]
    assert template["metadata"]["annotations"][annotation] == new_digest
    assert world.apply().result == "converged"


def test_content_the_api_rejects_is_stalled_and_the_last_good_content_stays(
        world: KubeWorld) -> None:
    world.basic()
    world.commit()
    assert world.apply().result == "changed"
    world.write("strategies/gepetto.py", STRATEGY_V1 + "#" * (1024 * 1024) + "\n")
    world.commit("too large for a ConfigMap")
    outcome = world.apply()
    assert outcome.result == "failed"
    # A real API server says 422 "Too long"; the emulator's HTTP layer 413: both refusals.
    assert "ApiRejected: the API refused to patch configmaps" in outcome.message
    assert world.configmap("gepetto-code")["data"] == {"gepetto.py": STRATEGY_V1}  # type: ignore


def test_an_unreachable_api_server_is_transient(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    config = json.loads(world.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "http://127.0.0.1:9"  # nothing listens
    world.kubeconfig.write_text(json.dumps(config))
    outcome = world.apply()
    assert outcome.result == "transient"
    assert "ApiUnreachable: cannot reach the API to list configmaps" in outcome.message
