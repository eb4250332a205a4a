"""Kubernetes targets end to end: the real client over HTTP against the emulated API."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reconciler.execute.executor import Hooks
from reconciler.kube.fleet import template_annotation
from tests.kube.emulator import RunningCluster
from tests.kube.world import (
    NAMESPACE,
    STRATEGY_V1,
    STRATEGY_V2,
    KubeWorld,
    config_doc,
    deployment,
    strategy_doc,
    target_doc,
)

V1_DIGEST = hashlib.sha256(STRATEGY_V1.encode()).hexdigest()
V2_DIGEST = hashlib.sha256(STRATEGY_V2.encode()).hexdigest()
STRATEGY_ANNOTATION = template_annotation("Strategy", "gepetto")


def _template_annotations(world: KubeWorld) -> dict[str, str]:
    found = world.emulator.get("deployments", NAMESPACE, "gepetto")
    return found["spec"]["template"]["metadata"].get("annotations", {})  # type: ignore


def _generation(world: KubeWorld) -> int:
    return world.emulator.get("deployments", NAMESPACE, "gepetto")["metadata"]["generation"]  # type: ignore


def test_delivery_applies_labelled_annotated_configmaps_and_restarts_by_digest(
        world: KubeWorld) -> None:
    world.basic()
    revision = world.commit("first")
    outcome = world.apply()
    assert outcome.result == "changed", outcome.message
    code = world.configmap("gepetto-code")
    assert code is not None and code["data"] == {"gepetto.py": STRATEGY_V1}
    meta = code["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "reconciler"
    assert meta["annotations"]["reconciler.dev/revision"] == f"main@sha1:{revision}"
    assert len(meta["annotations"]["reconciler.dev/content-sha256"]) == 64
    assert [f["manager"] for f in meta["managedFields"]] == ["reconciler"]
    settings = world.configmap("gepetto-settings")
    assert settings is not None and json.loads(settings["data"]["settings.json"]) == \
        {"threshold": 0.5}
    assert _template_annotations(world)[STRATEGY_ANNOTATION] == V1_DIGEST
    pointer = json.loads(world.configmap("canonical-models")["data"]["connect4-policy"])  # type: ignore
    assert set(pointer) == {"sha256", "uri", "revision", "time"}
    assert pointer["revision"] == f"main@sha1:{revision}"


def test_a_no_op_pass_sends_nothing_and_a_rollout_happens_only_when_content_changes(
        world: KubeWorld) -> None:
    world.basic()
    world.commit()
    assert world.apply().result == "changed"
    generation = _generation(world)
    before = dict(world.emulator.counters.by_kind)
    assert world.apply().result == "converged"
    spent = {k: v - before.get(k, 0) for k, v in world.emulator.counters.by_kind.items()
             if v != before.get(k, 0)}
    assert spent == {("GET", "configmaps"): 1}, "one LIST, nothing re-sent"
    world.write("config/settings.yaml", config_doc(["cluster-a"], {"threshold": 0.7}))
    world.commit("config only: no restart declared")
    assert world.apply().result == "changed"
    assert _generation(world) == generation
    world.write("strategies/gepetto.py", STRATEGY_V2)
    world.commit("new strategy")
    assert world.apply().result == "changed"
    assert _generation(world) == generation + 1
    assert _template_annotations(world)[STRATEGY_ANNOTATION] == V2_DIGEST


@pytest.mark.parametrize("behavior, reason", [
    ("CrashLoopBackOff", "CrashLoopBackOff"), ("ImagePullBackOff", "ImagePullBackOff"),
    ("RestartsClimbing", "restarts again and again"), ("Stalled", "did not finish within"),
    ("ProgressDeadlineExceeded", "has timed out progressing")])
def test_a_failing_rollout_rolls_back_marks_the_revision_and_names_the_pod(
        world: KubeWorld, behavior: str, reason: str) -> None:
    world.basic(soak="300ms")  # pods that restart after they got ready fail the soak
    world.commit()
    assert world.apply().result == "changed"
    world.emulator.pod_behavior = lambda template: behavior if template["metadata"].get(
        "annotations", {}).get(STRATEGY_ANNOTATION) == V2_DIGEST else "Ready"
    world.write("strategies/gepetto.py", STRATEGY_V2)
    bad = world.commit("breaks the pods")
    outcome = world.apply()
    assert outcome.result == "failed"
    assert outcome.report is not None
    rolled = [r for r in outcome.report.results if r.result == "rolled-back"]
    assert len(rolled) == 1 and reason in rolled[0].message
    if behavior not in ("Stalled", "ProgressDeadlineExceeded"):
        assert "pod gepetto-" in rolled[0].message
    assert world.configmap("gepetto-code")["data"]["gepetto.py"] == STRATEGY_V1  # type: ignore
    assert _template_annotations(world)[STRATEGY_ANNOTATION] == V1_DIGEST
    journal = world.journal()
    try:
        known = journal.object(("cluster-a", "Strategy", "gepetto"))
    finally:
        journal.close()
    assert known is not None
    assert (known["failed_digest"], known["failed_revision"]) == (V2_DIGEST, f"main@sha1:{bad}")
    assert reason in known["message"]
    again = world.apply()
    blocked = [r for r in again.report.results if r.result == "blocked"]  # type: ignore
    assert [r.action.reason for r in blocked] == ["FailedBefore"], "not retried in a loop"
    assert world.configmap("gepetto-code")["data"]["gepetto.py"] == STRATEGY_V1  # type: ignore


def test_hold_keeps_the_failing_content(world: KubeWorld) -> None:
    world.basic(on_failure="hold")
    world.commit()
    world.apply()
    world.emulator.pod_behavior = lambda template: "CrashLoopBackOff"
    world.write("strategies/gepetto.py", STRATEGY_V2)
    world.commit()
    assert world.apply().result == "failed"
    assert world.configmap("gepetto-code")["data"]["gepetto.py"] == STRATEGY_V2  # type: ignore


def test_a_hand_edit_is_restored_and_counted_without_a_rollout(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.apply()
    generation = _generation(world)
    edited = world.configmap("gepetto-code")
    assert edited is not None
    edited["data"]["gepetto.py"] = "print('hot fix')\n"
    world.emulator.put("configmaps", edited)
    drifted: list[str] = []
    outcome = world.apply(Hooks(drift=drifted.append))
    assert outcome.result == "changed"
    assert drifted == ["Strategy"]
    assert world.configmap("gepetto-code")["data"]["gepetto.py"] == STRATEGY_V1  # type: ignore
    assert _generation(world) == generation, "the pods already run this content"


def test_undeclared_objects_are_deleted_only_when_the_target_says_prune(
        world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.apply()
    world.remove("config/settings.yaml")
    world.commit("drop the config")
    assert world.apply().result == "converged"
    assert world.configmap("gepetto-settings") is not None, "prune is off: left alone"
    world.write("targets.yaml", target_doc("cluster-a", NAMESPACE, prune=True))
    world.commit("prune")
    outcome = world.apply()
    assert outcome.result == "changed", outcome.message
    assert world.configmap("gepetto-settings") is None
    assert world.configmap("gepetto-code") is not None
    # A key no longer declared in a ConfigMap that stays: only that key goes.
    world.write("strategies/gepetto.yaml", strategy_doc(["cluster-a"], key="strategy.py"))
    world.commit("rename the key")
    assert world.apply().result == "changed"
    assert world.configmap("gepetto-code")["data"] == {"strategy.py": STRATEGY_V1}  # type: ignore


def test_plan_shows_configmap_diffs_and_never_reads_secrets(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.apply()
    world.emulator.put("secrets", {"metadata": {"name": "provider", "namespace": NAMESPACE},
                                   "data": {"token": "aHVudGVyMg=="}})
    world.write("strategies/gepetto.py", STRATEGY_V2)
    world.commit()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(world.root)}
    done = subprocess.run([sys.executable, "-m", "reconciler", "plan", "--config",
                           str(world.config)], capture_output=True, text=True, env=env,
                          cwd=world.root, check=False, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "~ Strategy gepetto: update ConfigMap gepetto-code key gepetto.py" in done.stdout
    assert "-    return sorted(candidates)[:3]" in done.stdout
    assert "+    return sorted(candidates)[:4]" in done.stdout
    assert f"namespace {NAMESPACE}" in done.stdout
    assert "aHVudGVyMg" not in done.stdout and "hunter2" not in done.stdout
    assert not [k for k in world.emulator.counters.by_kind if k[1].startswith("secrets")]


def test_one_daemon_drives_several_clusters(tmp_path: Path, world: KubeWorld) -> None:
    with RunningCluster() as second:
        config = json.loads(world.kubeconfig.read_text())
        config["clusters"].append({"name": "east", "cluster": {"server": second.url}})
        config["contexts"].append({"name": "east", "context": {"cluster": "east",
                                                               "user": "tester"}})
        world.kubeconfig.write_text(json.dumps(config))
        world.basic()
        second.emulator.namespaces.add(NAMESPACE)
        second.emulator.put("deployments", deployment("gepetto"))
        world.write("targets.yaml", target_doc("cluster-a", NAMESPACE) + "\n---\n"
                    + target_doc("cluster-b", NAMESPACE, context="east"))
        world.write("strategies/gepetto.yaml", strategy_doc(["cluster-a", "cluster-b"]))
        world.commit()
        outcome = world.apply()
        assert outcome.result == "changed", outcome.message
        assert second.emulator.get("configmaps", NAMESPACE, "gepetto-code")["data"] == \
            {"gepetto.py": STRATEGY_V1}
        assert world.configmap("gepetto-code") is not None



def test_status_names_the_failing_pod_and_its_reason(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.apply()
    world.emulator.pod_behavior = lambda template: "CrashLoopBackOff" if template[
        "metadata"].get("annotations", {}).get(STRATEGY_ANNOTATION) == V2_DIGEST else "Ready"
    world.write("strategies/gepetto.py", STRATEGY_V2)
    world.commit()
    world.apply()
    done = subprocess.run([sys.executable, "-m", "reconciler", "status", "--config",
                           str(world.config)], capture_output=True, text=True,
                          cwd=world.root, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if "RolledBack" in x)
    assert "gepetto" in line and "CrashLoopBackOff" in line and "pod gepetto-" in line


def test_content_that_is_not_utf8_travels_as_binary_data(world: KubeWorld) -> None:
    world.basic()
    latin1 = "# -*- coding: latin-1 -*-\nNAME = 'caf\xe9'\n\n\ndef select_chutes(c):\n" \
             "    return c\n"
    world.write("strategies/gepetto.py", latin1.encode("latin-1"))
    world.commit()
    assert world.apply().result == "changed"
    stored = world.configmap("gepetto-code")
    assert stored is not None and "data" not in stored
    assert base64.b64decode(stored["binaryData"]["gepetto.py"]) == latin1.encode("latin-1")
    assert world.apply().result == "converged"


def test_an_unusable_kubeconfig_is_the_targets_error_not_a_crash(world: KubeWorld) -> None:
    world.basic()
    world.write("targets.yaml", target_doc("cluster-a", NAMESPACE, context="nowhere"))
    world.commit()
    outcome = world.apply()
    assert outcome.result == "failed"
    assert "KubeconfigInvalid" in outcome.message and "context nowhere" in outcome.message


def test_pruning_our_last_key_keeps_a_configmap_that_holds_keys_of_others(
        world: KubeWorld) -> None:
    world.basic(prune=True)
    world.commit()
    world.apply()
    shared = world.configmap("gepetto-settings")
    assert shared is not None
    shared["data"]["added-by-hand"] = "keep me"
    world.emulator.put("configmaps", shared)
    world.remove("config/settings.yaml")
    world.commit("drop the config")
    assert world.apply().result == "changed"
    assert world.configmap("gepetto-settings")["data"] == {"added-by-hand": "keep me"}  # type: ignore


@pytest.mark.skipif(Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists(),
                    reason="runs in a pod: the service account would really be used")
def test_in_a_pod_without_a_kubeconfig_the_service_account_is_used(world: KubeWorld) -> None:
    world.basic()
    world.write("targets.yaml", json.dumps({
        "apiVersion": "reconciler/v1", "kind": "Target", "metadata": {"name": "cluster-a"},
        "spec": {"kubernetes": {"namespace": NAMESPACE}}}))
    world.commit()
    settings = json.loads(world.config.read_text())
    del settings["kubernetes"]["kubeconfig"]
    world.config.write_text(json.dumps(settings))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(world.root),
           "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "9"}
    done = subprocess.run([sys.executable, "-m", "reconciler", "plan", "--config",
                           str(world.config)], capture_output=True, text=True, env=env,
                          cwd=world.root, check=False, timeout=60)
    assert done.returncode == 1
    # Outside a pod the service account's token file is missing: the branch is taken and
    # the target says so, by name.
    assert "KubeconfigInvalid: cannot load Kubernetes configuration for the in-cluster " \
           "service account" in done.stdout


def test_a_stop_during_a_rollout_undoes_it_without_marking_the_revision(
        world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.apply()
    world.emulator.pod_behavior = lambda template: "Stalled"  # the rollout never finishes
    world.write("strategies/gepetto.py", STRATEGY_V2)
    world.commit()
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    outcome = world.apply(stop=stop)
    assert outcome.result == "failed" and outcome.report is not None
    [skipped] = [r for r in outcome.report.results if r.result == "skipped"]
    assert "interrupted by a stop request" in skipped.message
    assert world.configmap("gepetto-code")["data"]["gepetto.py"] == STRATEGY_V1  # type: ignore
    journal = world.journal()
    try:
        known = journal.object(("cluster-a", "Strategy", "gepetto"))
    finally:
        journal.close()
    assert known is not None and known["failed_digest"] is None
    assert known["reason"] == "Interrupted"
