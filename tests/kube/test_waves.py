"""Waves across Kubernetes targets (the real client against the emulated API server): a
failing second wave takes the revision back from the canary and the second wave — the
ConfigMap key and the pod template both — and the last wave never sees it."""

from __future__ import annotations

import hashlib
from typing import Any

from reconciler.events import Event, EventType
from reconciler.execute.executor import Hooks
from reconciler.kube.fleet import template_annotation
from tests.kube.world import (
    STRATEGY_V1,
    STRATEGY_V2,
    KubeWorld,
    deployment,
    strategy_doc,
    target_doc,
)

V1_DIGEST = hashlib.sha256(STRATEGY_V1.encode()).hexdigest()
V2_DIGEST = hashlib.sha256(STRATEGY_V2.encode()).hexdigest()
ANNOTATION = template_annotation("Strategy", "gepetto")
TARGETS = ("canary", "s1", "s2", "rest")


def _code(world: KubeWorld, namespace: str) -> str | None:
    found = world.emulator.get("configmaps", namespace, "gepetto-code")
    return None if found is None else found["data"]["gepetto.py"]  # type: ignore[no-any-return]


def _running(world: KubeWorld, namespace: str) -> str | None:
    found = world.emulator.get("deployments", namespace, "gepetto")
    annotations = found["spec"]["template"]["metadata"].get("annotations", {})
    return annotations.get(ANNOTATION)  # type: ignore[no-any-return]


def _fails_v2_in_s2(template: dict[str, Any]) -> str:
    labels, annotations = (template["metadata"].get(part, {})
                           for part in ("labels", "annotations"))
    failing = labels.get("wave") == "s2" and annotations.get(ANNOTATION) == V2_DIGEST
    return "CrashLoopBackOff" if failing else "Ready"


def test_a_failing_second_wave_recalls_the_canary_and_the_second_wave_on_kubernetes(
        world: KubeWorld) -> None:
    for name in TARGETS:
        world.emulator.namespaces.add(name)
        made = deployment("gepetto", namespace=name)
        made["spec"]["template"]["metadata"]["labels"]["wave"] = name
        world.emulator.put("deployments", made)
    world.write("targets.yaml", "\n---\n".join([
        target_doc("canary", "canary"), target_doc("s1", "s1", after="canary"),
        target_doc("s2", "s2", after="canary"),
        target_doc("rest", "rest", after={"targets": ["s1", "s2"], "healthy": 1})]))
    world.write("strategies/gepetto.py", STRATEGY_V1)
    world.write("strategies/gepetto.yaml", strategy_doc(list(TARGETS), soak="300ms"))
    world.commit("waves")
    for _ in range(3):  # one wave per pass: no soak between waves here
        world.apply()
    assert {name: _code(world, name) for name in TARGETS} == dict.fromkeys(TARGETS, STRATEGY_V1)

    world.emulator.pod_behavior = _fails_v2_in_s2
    world.write("strategies/gepetto.py", STRATEGY_V2)
    bad = world.commit("breaks the pods in s2")
    assert world.apply().result == "changed"  # the canary takes it
    assert (_code(world, "canary"), _running(world, "canary")) == (STRATEGY_V2, V2_DIGEST)

    events: list[Event] = []
    outcome = world.apply(Hooks(event=events.append))
    assert outcome.result == "failed" and outcome.report is not None
    results = {r.action.target: r.result for r in outcome.report.results
               if r.result != "blocked"}
    assert results == {"s1": "rolled-back", "s2": "rolled-back", "canary": "rolled-back"}, \
        outcome.message
    for name in ("canary", "s1", "s2"):
        assert (_code(world, name), _running(world, name)) == (STRATEGY_V1, V1_DIGEST), name
    assert _code(world, "rest") == STRATEGY_V1, "the last wave never got it"
    assert sorted((e.target, e.reason) for e in events if e.type is EventType.ROLLED_BACK) == [
        ("canary", "WaveFailed"), ("s1", "WaveFailed"), ("s2", "RolledBack")]

    journal = world.journal()
    try:
        for name in ("canary", "s1", "s2"):
            known = journal.object((name, "Strategy", "gepetto")) or {}
            assert (known["failed_digest"], known["failed_revision"]) == (
                V2_DIGEST, f"main@sha1:{bad}"), name
    finally:
        journal.close()
    again = world.apply()
    assert again.report is not None
    assert {r.result for r in again.report.results} == {"blocked"}, "nothing retried"
    journal = world.journal()
    try:
        rest = journal.object(("rest", "Strategy", "gepetto")) or {}
    finally:
        journal.close()
    assert rest["reason"] == "WaveFailed" and rest["wave"] == {
        "wave": 3, "after": ["s1", "s2"], "needed": 1, "healthy": 0}
