"""The emulator's extensions to kmock behave as a real API server does, through the real
client over HTTP: the scenario tests rely on every one of them."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, config, watch

from tests.kube.emulator import APPLY_CONTENT_TYPE, RunningCluster
from tests.kube.world import deployment


def _core(cluster: RunningCluster, tmp_path: Path) -> client.CoreV1Api:
    api = config.new_client_from_config(str(cluster.kubeconfig(tmp_path / "kc")),
                                        context="kmock")
    return client.CoreV1Api(api)


def _status(error: client.ApiException) -> tuple[int, str]:
    return error.status, json.loads(error.body)["message"]


def test_writes_bump_resource_version_and_stale_preconditions_conflict(
        cluster: RunningCluster, tmp_path: Path) -> None:
    core = _core(cluster, tmp_path)
    created = core.create_namespaced_config_map("default", {"metadata": {"name": "a"},
                                                            "data": {"k": "1"}})
    assert created.metadata.uid and created.metadata.creation_timestamp
    first = created.metadata.resource_version
    updated = core.patch_namespaced_config_map("a", "default", {"data": {"k": "2"}},
                                               _content_type="application/merge-patch+json")
    assert int(updated.metadata.resource_version) > int(first)
    same = core.patch_namespaced_config_map("a", "default", {"data": {"k": "2"}},
                                            _content_type="application/merge-patch+json")
    assert same.metadata.resource_version == updated.metadata.resource_version  # no-op write
    with pytest.raises(client.ApiException) as stale:
        core.patch_namespaced_config_map("a", "default", {"metadata": {"resourceVersion": first},
                                                          "data": {"k": "3"}},
                                         _content_type="application/merge-patch+json")
    assert stale.value.status == 409 and "has been modified" in _status(stale.value)[1]
    fresh = core.patch_namespaced_config_map(
        "a", "default", {"metadata": {"resourceVersion": updated.metadata.resource_version},
                         "data": {"k": "3", "gone": None}},
        _content_type="application/merge-patch+json")
    assert fresh.data == {"k": "3"}
    with pytest.raises(client.ApiException) as exists:
        core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    assert exists.value.status == 409


def test_server_side_apply_creates_owns_and_removes_dropped_fields(
        cluster: RunningCluster, tmp_path: Path) -> None:
    core = _core(cluster, tmp_path)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
            "data": {"a": "1", "b": "2"}}
    with pytest.raises(client.ApiException) as no_manager:
        core.patch_namespaced_config_map("cm", "default", body,
                                         _content_type=APPLY_CONTENT_TYPE)
    assert no_manager.value.status == 400
    created = core.patch_namespaced_config_map("cm", "default", body, field_manager="mine",
                                               _content_type=APPLY_CONTENT_TYPE)
    assert created.data == {"a": "1", "b": "2"}
    assert [f.manager for f in created.metadata.managed_fields] == ["mine"]
    cluster.emulator.put("configmaps", {"metadata": {"name": "cm", "namespace": "default"},
                                        "data": {"a": "1", "b": "2", "theirs": "x"}})
    again = core.patch_namespaced_config_map(
        "cm", "default", {**body, "data": {"a": "9"}}, field_manager="mine", force=True,
        _content_type=APPLY_CONTENT_TYPE)
    assert again.data == {"a": "9", "theirs": "x"}, "b was ours and dropped; theirs stays"
    with pytest.raises(client.ApiException) as stale:
        core.patch_namespaced_config_map(
            "cm", "default", {**body, "metadata": {"name": "cm", "resourceVersion": "1"}},
            field_manager="mine", _content_type=APPLY_CONTENT_TYPE)
    assert stale.value.status == 409


def test_label_selectors_and_missing_namespaces(cluster: RunningCluster,
                                                tmp_path: Path) -> None:
    core = _core(cluster, tmp_path)
    core.create_namespaced_config_map("default", {"metadata": {"name": "x",
                                                               "labels": {"team": "a"}}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "y",
                                                               "labels": {"team": "b"}}})
    picked = core.list_namespaced_config_map("default", label_selector="team=a")
    assert [i.metadata.name for i in picked.items] == ["x"]
    assert core.list_namespaced_config_map("nowhere").items == []
    with pytest.raises(client.ApiException) as missing:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "z"}})
    assert _status(missing.value) == (404, 'namespaces "nowhere" not found')


def test_deployments_follow_the_pod_behavior_a_test_sets(cluster: RunningCluster,
                                                         tmp_path: Path) -> None:
    emulator = cluster.emulator
    emulator.namespaces.add("ml")
    emulator.pod_behavior = lambda template: (
        "CrashLoopBackOff" if template["metadata"].get("annotations", {}).get("v") == "bad"
        else "Ready")
    emulator.put("deployments", deployment("app"))
    ready = emulator.get("deployments", "ml", "app")
    assert ready["metadata"]["generation"] == 1
    assert ready["status"] == {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                               "readyReplicas": 2, "availableReplicas": 2}
    apps = client.AppsV1Api(config.new_client_from_config(
        str(cluster.kubeconfig(tmp_path / "kc")), context="kmock"))
    patched = apps.patch_namespaced_deployment(
        "app", "ml", {"spec": {"template": {"metadata": {"annotations": {"v": "bad"}}}}},
        _content_type="application/merge-patch+json")
    assert patched.metadata.generation == 2
    assert patched.status.updated_replicas == 2 and patched.status.available_replicas == 2 \
        and patched.status.replicas == 4, "old pods stay up while new ones crash"
    core = _core(cluster, tmp_path)
    pods = core.list_namespaced_pod("ml", label_selector="app=app").items
    crashing = [p for p in pods if (p.metadata.annotations or {}).get("v") == "bad"]
    assert len(crashing) == 2
    assert crashing[0].status.container_statuses[0].state.waiting.reason == "CrashLoopBackOff"


def test_jobs_get_a_pod_and_a_log_and_take_them_along_when_deleted(
        cluster: RunningCluster, tmp_path: Path) -> None:
    emulator = cluster.emulator
    emulator.job_behavior = lambda job: ("Complete", "warming up\n{\"event\": \"result\"}\n")
    api = config.new_client_from_config(str(cluster.kubeconfig(tmp_path / "kc")),
                                        context="kmock")
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job("default", {
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "i"}]}}}})
    assert batch.read_namespaced_job("j", "default").status.succeeded == 1
    pods = core.list_namespaced_pod("default", label_selector="job-name=j").items
    assert core.read_namespaced_pod_log(pods[0].metadata.name, "default").endswith(
        '{"event": "result"}\n')
    batch.delete_namespaced_job("j", "default", propagation_policy="Background")
    assert core.list_namespaced_pod("default", label_selector="job-name=j").items == []


def test_faults_answer_the_next_matching_requests_then_stop(cluster: RunningCluster,
                                                           tmp_path: Path) -> None:
    core = _core(cluster, tmp_path)
    cluster.emulator.fail("GET", "configmaps", 503, times=2)
    for _ in range(2):
        with pytest.raises(client.ApiException) as failed:
            core.list_namespaced_config_map("default")
        assert failed.value.status == 503
    assert core.list_namespaced_config_map("default").items == []
    assert cluster.emulator.counters.by_kind[("GET", "configmaps")] == 3


def test_watches_stream_selected_writes_from_their_resource_version(
        cluster: RunningCluster, tmp_path: Path) -> None:
    core = _core(cluster, tmp_path)
    core.create_namespaced_config_map("default", {"metadata": {"name": "before",
                                                               "labels": {"team": "a"}}})
    listed = core.list_namespaced_config_map("default", label_selector="team=a")
    seen: list[tuple[str, str]] = []

    def follow() -> None:
        for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                          label_selector="team=a", timeout_seconds=2,
                                          resource_version=listed.metadata.resource_version):
            seen.append((event["type"], event["object"].metadata.name))

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.3)
    core.create_namespaced_config_map("default", {"metadata": {"name": "other",
                                                               "labels": {"team": "b"}}})
    core.patch_namespaced_config_map("before", "default", {"data": {"k": "v"}},
                                     _content_type="application/merge-patch+json")
    cluster.emulator.delete_object("configmaps", "default", "before")
    follower.join(10)
    assert seen == [("MODIFIED", "before"), ("DELETED", "before")]


def test_a_non_forced_apply_of_another_managers_field_is_a_conflict_naming_it(
        cluster: RunningCluster, tmp_path: Path) -> None:
    core = _core(cluster, tmp_path)
    core.create_namespaced_config_map("default", {
        "metadata": {"name": "chart", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "data": {"a": "1"}}, field_manager="helm")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "chart"},
            "data": {"a": "1", "b": "2"}}
    shared = core.patch_namespaced_config_map("chart", "default", body, field_manager="mine",
                                              _content_type=APPLY_CONTENT_TYPE)
    assert shared.data == {"a": "1", "b": "2"}, "an equal value is no conflict"
    with pytest.raises(client.ApiException) as conflict:
        core.patch_namespaced_config_map(
            "chart", "default", {**body, "data": {"a": "9"}, "metadata": {
                "name": "chart", "labels": {"app.kubernetes.io/managed-by": "me"}}},
            field_manager="mine", _content_type=APPLY_CONTENT_TYPE)
    assert conflict.value.status == 409
    causes = json.loads(conflict.value.body)["details"]["causes"]
    assert {(c["reason"], c["message"], c["field"]) for c in causes} == {
        ("FieldManagerConflict", 'conflict with "helm" using v1', ".data.a"),
        ("FieldManagerConflict", 'conflict with "helm" using v1',
         ".metadata.labels.app.kubernetes.io/managed-by")}
    forced = core.patch_namespaced_config_map(
        "chart", "default", {**body, "data": {"a": "9"}}, field_manager="mine", force=True,
        _content_type=APPLY_CONTENT_TYPE)
    assert forced.data["a"] == "9"
    helm = [f for f in forced.metadata.managed_fields if f.manager == "helm"]
    assert "a" not in (helm[0].fields_v1 or {}).get("data", []), "the field changed hands"


def test_a_merge_patch_takes_the_fields_it_sets(cluster: RunningCluster,
                                                tmp_path: Path) -> None:
    core = _core(cluster, tmp_path)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
            "data": {"a": "1"}}
    core.patch_namespaced_config_map("cm", "default", body, field_manager="mine",
                                     _content_type=APPLY_CONTENT_TYPE)
    edited = core.patch_namespaced_config_map("cm", "default", {"data": {"a": "hand"}},
                                              field_manager="kubectl-edit")
    owners = {f.manager: f.fields_v1 for f in edited.metadata.managed_fields}
    assert owners["kubectl-edit"] == {"data": ["a"]} and "mine" not in owners
    with pytest.raises(client.ApiException) as conflict:
        core.patch_namespaced_config_map("cm", "default", body, field_manager="mine",
                                         _content_type=APPLY_CONTENT_TYPE)
    assert "kubectl-edit" in json.loads(conflict.value.body)["message"]
