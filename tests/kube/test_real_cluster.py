"""The same scenarios against a real cluster. Skipped unless KUBECONFIG is set; the default
test run deselects them (``-m "not kubeconfig"``). Run with:

    KUBECONFIG=~/.kube/config .venv/bin/pytest -m kubeconfig tests/kube/test_real_cluster.py

Each test makes its own namespace (the credentials need to create and delete namespaces,
Deployments and ConfigMaps) and deletes it afterwards. ``RECONCILER_TEST_CONTEXT`` picks a
context (default: the current one); ``RECONCILER_TEST_IMAGE`` is a busybox-like image with
``sh`` (default ``busybox:1.36``).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from reconciler.app import Wiring
from reconciler.journal import Journal
from reconciler.kube.api import Clusters
from reconciler.kube.fleet import template_annotation
from reconciler.kube.lease import LeaseElector
from reconciler.passes import PassOutcome, run_pass
from reconciler.settings import KubeSettings, LeaderElection, load_settings
from tests.conftest import Repo, git
from tests.kube.world import (
    MODEL_V1,
    STRATEGY_V1,
    STRATEGY_V2,
    config_doc,
    model_doc,
    strategy_doc,
)

pytestmark = [pytest.mark.kubeconfig,
              pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                                 reason="needs a real cluster: set KUBECONFIG")]
CONTEXT = os.environ.get("RECONCILER_TEST_CONTEXT")
IMAGE = os.environ.get("RECONCILER_TEST_IMAGE", "busybox:1.36")
V2_DIGEST = hashlib.sha256(STRATEGY_V2.encode()).hexdigest()


class Real:
    """A namespace of a real cluster, a repository and settings that target it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.namespace = f"reconciler-test-{secrets.token_hex(4)}"
        self.api = config.new_client_from_config(context=CONTEXT)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.core.create_namespace({"metadata": {"name": self.namespace}})
        self.repo = root / "repo"
        self.folder = self.repo / "desired-state"
        self.folder.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        self.git = Repo(self.repo)
        self.config = root / "reconciler.yaml"
        self.config.write_text(json.dumps({
            "repo": str(self.repo), "stateDir": str(root / "state"), "listen": "",
            "kubernetes": {"pollInterval": "1s", "requestTimeout": "30s"}}))

    def close(self) -> None:
        self.core.delete_namespace(self.namespace)

    def write(self, relative: str, content: str | bytes) -> None:
        self.git.write(relative, content)

    def commit(self) -> None:
        self.git.commit("change")

    def apply(self) -> PassOutcome:
        settings = load_settings(self.config, {})
        journal = Journal(settings.journal_path)
        try:
            return run_pass(Wiring(settings), journal, threading.Event())
        finally:
            journal.close()

    def configmap(self, name: str) -> dict[str, str] | None:
        try:
            return dict(self.core.read_namespaced_config_map(name, self.namespace).data or {})
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def basic(self, **target: Any) -> None:
        """A Deployment whose pods crash unless the delivered strategy keeps '[:3]'."""
        self.write("targets.yaml", _target(self.namespace, **target))
        self.write("strategies/gepetto.py", STRATEGY_V1)
        doc = json.loads(strategy_doc(["real"]))
        doc["spec"]["restart"]["timeout"] = "3m"
        self.write("strategies/gepetto.yaml", json.dumps(doc))
        self.write("config/settings.yaml", config_doc(["real"], {"threshold": 0.5}))
        self.write("models/policy.bin", MODEL_V1)
        self.write("models/connect4.yaml", model_doc(["real"], "models/policy.bin", MODEL_V1))
        self.apps.create_namespaced_deployment(self.namespace, {
            "metadata": {"name": "gepetto"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "gepetto"}},
                     "template": {"metadata": {"labels": {"app": "gepetto"}}, "spec": {
                         "containers": [{
                             "name": "main", "image": IMAGE,
                             "command": ["sh", "-c", "grep -q '\\[:3\\]' /code/gepetto.py "
                                         "&& exec sleep 3600; exit 1"],
                             "volumeMounts": [{"name": "code", "mountPath": "/code"}]}],
                         "volumes": [{"name": "code", "configMap": {
                             "name": "gepetto-code", "optional": True}}]}}}})


def _target(namespace: str, **extra: Any) -> str:
    kubernetes = {"namespace": namespace, **({"context": CONTEXT} if CONTEXT else {})}
    return json.dumps({"apiVersion": "reconciler/v1", "kind": "Target",
                       "metadata": {"name": "real"},
                       "spec": {"kubernetes": kubernetes, **extra}})


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Real]:
    made = Real(tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_delivery_rollout_drift_and_no_op(real: Real) -> None:
    real.basic()
    real.commit()
    outcome = real.apply()
    assert outcome.result == "changed", outcome.message
    assert real.configmap("gepetto-code") == {"gepetto.py": STRATEGY_V1}
    assert real.apply().result == "converged"
    real.core.patch_namespaced_config_map("gepetto-code", real.namespace,
                                          {"data": {"gepetto.py": "print('hand edit')\n"}})
    assert real.apply().result == "changed"
    assert real.configmap("gepetto-code") == {"gepetto.py": STRATEGY_V1}


def test_a_crash_looping_rollout_rolls_back(real: Real) -> None:
    real.basic()
    real.commit()
    assert real.apply().result == "changed"
    real.write("strategies/gepetto.py", STRATEGY_V2)
    real.commit()
    outcome = real.apply()
    assert outcome.result == "failed", outcome.message
    assert "rolled back" in outcome.message or "rolled-back" in outcome.message
    assert real.configmap("gepetto-code") == {"gepetto.py": STRATEGY_V1}
    template = real.apps.read_namespaced_deployment("gepetto", real.namespace).spec.template
    assert template.metadata.annotations[template_annotation("Strategy", "gepetto")] != \
        V2_DIGEST


def test_prune_deletes_only_when_asked(real: Real) -> None:
    real.basic()
    real.commit()
    real.apply()
    (real.folder / "config" / "settings.yaml").unlink()
    real.commit()
    real.apply()
    assert real.configmap("gepetto-settings") is not None
    targets = json.loads((real.folder / "targets.yaml").read_text())
    targets["spec"]["prune"] = True
    real.write("targets.yaml", json.dumps(targets))
    real.commit()
    assert real.apply().result == "changed"
    assert real.configmap("gepetto-settings") is None


def test_lease_hand_over(real: Real, tmp_path: Path) -> None:
    clusters = Clusters(KubeSettings(None, 30.0, 1.0))
    election = LeaderElection(real.namespace, "reconciler-test", CONTEXT, 3)
    first = LeaseElector(clusters.get(CONTEXT), election, "first")
    second = LeaseElector(clusters.get(CONTEXT), election, "second")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    assert not first.try_acquire(), "current as first sees it: the expiry count starts"
    time.sleep(4)
    assert first.try_acquire(), "unchanged for the whole duration on first's clock: expired"


def test_a_missing_namespace_is_a_clear_error(real: Real) -> None:
    real.basic()
    real.write("targets.yaml", _target(f"{real.namespace}-absent"))
    real.commit()
    outcome = real.apply()
    assert outcome.result == "failed"
    assert "does not exist" in outcome.message


def test_a_configmap_helm_owns_is_not_adopted_until_the_target_says_so(real: Real) -> None:
    real.basic()
    real.commit()
    real.core.create_namespaced_config_map(real.namespace, {
        "metadata": {"name": "gepetto-code",
                     "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "data": {"chart-value.yaml": "replicas: 3\n"}}, field_manager="helm")
    outcome = real.apply()
    assert outcome.result == "failed"
    assert "NotOwned" in outcome.message or "not reconciler's" in outcome.message, \
        outcome.message
    assert real.configmap("gepetto-code") == {"chart-value.yaml": "replicas: 3\n"}
    real.write("targets.yaml", _target(real.namespace, adopt=True))
    real.commit()
    assert real.apply().result == "changed"
    adopted = real.core.read_namespaced_config_map("gepetto-code", real.namespace)
    assert adopted.metadata.labels["app.kubernetes.io/managed-by"] == "reconciler"
    assert adopted.data == {"chart-value.yaml": "replicas: 3\n", "gepetto.py": STRATEGY_V1}


def test_a_key_another_manager_owns_is_a_field_conflict_naming_it(real: Real) -> None:
    real.basic()
    real.commit()
    assert real.apply().result == "changed"
    real.core.patch_namespaced_config_map("gepetto-settings", real.namespace,
                                          {"data": {"extra.json": '{"by": "ops"}'}},
                                          field_manager="ops-tool")
    real.write("config/extra.yaml", json.dumps({
        "apiVersion": "reconciler/v1", "kind": "Config", "metadata": {"name": "extra"},
        "spec": {"targets": ["real"], "format": "json", "data": {"by": "git"},
                 "deliver": {"configMap": {"name": "gepetto-settings", "key": "extra.json"}}}}))
    real.commit()
    outcome = real.apply()
    assert outcome.result == "failed"
    assert "ops-tool" in outcome.message, outcome.message
    assert (real.configmap("gepetto-settings") or {})["extra.json"] == '{"by": "ops"}'
