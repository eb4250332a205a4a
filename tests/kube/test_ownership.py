"""Other managers' ConfigMaps and fields are never taken over unless the Target adopts them.

A ConfigMap Helm (or a person with kubectl) made is Stalled ``NotOwned`` and untouched;
``adopt: true`` takes it over. Applies are not forced: a field another manager owns is
Stalled ``FieldConflict`` naming it, while a key of ours edited by hand is drift and comes
back.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client, config

from tests.kube.world import NAMESPACE, STRATEGY_V1, KubeWorld, target_doc

HELM_CONFIGMAP = {"metadata": {"name": "gepetto-code", "namespace": NAMESPACE,
                               "labels": {"app.kubernetes.io/managed-by": "Helm"}},
                  "data": {"chart-value.yaml": "replicas: 3\n"}}


def _core(world: KubeWorld) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(world.kubeconfig),
                                                          context="kmock"))


def _row(world: KubeWorld, kind: str, name: str) -> dict[str, Any]:
    journal = world.journal()
    try:
        rows = {(row["kind"], row["name"]): row for row in journal.objects()}
    finally:
        journal.close()
    return rows[(kind, name)]


def test_a_configmap_helm_made_is_not_adopted(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    _core(world).create_namespaced_config_map(NAMESPACE, HELM_CONFIGMAP, field_manager="helm")
    before = world.configmap("gepetto-code")
    outcome = world.apply()
    assert outcome.result == "failed"
    row = _row(world, "Strategy", "gepetto")
    assert (row["status"], row["reason"]) == ("Stalled", "NotOwned")
    assert "app.kubernetes.io/managed-by: Helm" in row["message"]
    assert "field managers helm" in row["message"] and "adopt: true" in row["message"]
    assert world.configmap("gepetto-code") == before, "not one field was touched"
    assert _row(world, "Config", "gepetto-settings")["status"] == "Ready", "others go on"


def test_a_configmap_made_by_hand_without_our_labels_is_not_adopted(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    _core(world).create_namespaced_config_map(NAMESPACE, {
        "metadata": {"name": "gepetto-code"}, "data": {"gepetto.py": "old = 1\n"}})
    world.apply()
    row = _row(world, "Strategy", "gepetto")
    assert row["reason"] == "NotOwned" and "no app.kubernetes.io/managed-by label" in \
        row["message"]
    assert world.configmap("gepetto-code")["data"] == {"gepetto.py": "old = 1\n"}  # type: ignore


def test_adopt_true_takes_the_configmap_over(world: KubeWorld) -> None:
    world.basic()
    world.write("targets.yaml", target_doc("cluster-a", NAMESPACE, adopt=True))
    world.commit()
    _core(world).create_namespaced_config_map(NAMESPACE, HELM_CONFIGMAP, field_manager="helm")
    outcome = world.apply()
    assert outcome.result == "changed", outcome.message
    adopted = world.configmap("gepetto-code")
    assert adopted is not None
    assert adopted["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "reconciler"
    assert adopted["data"]["gepetto.py"] == STRATEGY_V1
    assert adopted["data"]["chart-value.yaml"] == "replicas: 3\n", "their key stays theirs"
    assert world.apply().result == "converged"


def test_a_field_another_manager_owns_is_a_conflict_naming_it(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.apply()
    _core(world).patch_namespaced_config_map("gepetto-settings", NAMESPACE,
                                             {"data": {"extra.json": '{"by": "ops"}'}},
                                             field_manager="ops-tool")
    world.write("config/extra.yaml", json.dumps({
        "apiVersion": "reconciler/v1", "kind": "Config", "metadata": {"name": "extra"},
        "spec": {"targets": ["cluster-a"], "format": "json", "data": {"by": "git"},
                 "deliver": {"configMap": {"name": "gepetto-settings", "key": "extra.json"}}}}))
    world.commit("declare a key ops-tool owns")
    world.apply()
    row = _row(world, "Config", "extra")
    assert (row["status"], row["reason"]) == ("Stalled", "FieldConflict")
    assert ".data.extra.json (managed by 'ops-tool')" in row["message"]
    live = world.configmap("gepetto-settings")
    assert live is not None and live["data"]["extra.json"] == '{"by": "ops"}'


def test_our_key_edited_with_kubectl_is_drift_and_comes_back(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    world.apply()
    _core(world).patch_namespaced_config_map("gepetto-code", NAMESPACE,
                                             {"data": {"gepetto.py": "hot = 'fix'\n"}},
                                             field_manager="kubectl-edit")
    assert world.apply().result == "changed"
    assert world.configmap("gepetto-code")["data"]["gepetto.py"] == STRATEGY_V1  # type: ignore
