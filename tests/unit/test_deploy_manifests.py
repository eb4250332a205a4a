"""deploy/: least-privilege RBAC that still covers every API call the adapter makes, and a
Deployment whose settings are valid."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from reconciler.kube.codejobs import NETWORK_LABEL
from reconciler.settings import load_settings
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
# Server-side apply that creates a ConfigMap is authorized as create as well as patch.
GRANTED_FOR_APPLY = {("create", "configmaps")}


def _documents() -> list[dict[str, Any]]:
    yaml = YAML(typ="safe")
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [d for d in yaml.load_all(path.read_text()) if d]
    return found


def _calls() -> set[tuple[str, str]]:
    """(verb, resource) of every API call in the adapter: each goes through Cluster.call
    or Cluster.watch."""
    pattern = re.compile(r'\.(?:call|watch)\(\s*"(\w+)",\s*"([\w/]+)"')
    calls = set()
    for path in (REPO_ROOT / "reconciler" / "kube").glob("*.py"):
        calls |= set(pattern.findall(path.read_text()))
    return calls


def test_the_roles_grant_exactly_what_the_adapter_calls() -> None:
    documents = _documents()
    assert not [d for d in documents if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    granted = set()
    for role in (d for d in documents if d["kind"] == "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            granted |= {(verb, resource) for verb in rule["verbs"]
                        for resource in rule["resources"]}
    assert not [g for g in granted if g[1] == "secrets"], "no Secrets, ever"
    used = _calls()
    assert len(used) >= 10, used
    assert used - granted == set(), "an API call the Roles do not allow"
    assert granted - used == GRANTED_FOR_APPLY, "a grant nothing uses"
    bindings = [d for d in documents if d["kind"] == "RoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == \
        {r["metadata"]["name"] for r in documents if r["kind"] == "Role"}
    assert all(s["name"] == "reconciler" for b in bindings for s in b["subjects"])


def test_the_deployment_runs_the_daemon_hardened_with_valid_settings(tmp_path: Path) -> None:
    documents = _documents()
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:1] == ["run"]
    assert pod["serviceAccountName"] == "reconciler"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [settings] = [d for d in documents if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == "reconciler-settings"]
    config = tmp_path / "reconciler.yaml"
    config.write_text(settings["data"]["reconciler.yaml"])
    loaded = load_settings(config, {})
    assert loaded.leader_election is not None
    assert loaded.leader_election.namespace == deployment["metadata"]["namespace"]
    assert loaded.kube.kubeconfig is None, "in a pod: the service account, no kubeconfig"
    assert deployment["spec"]["replicas"] >= 2, "a standby takes over on the Lease"


def test_repository_code_runs_in_jobs_that_a_policy_cuts_off(tmp_path: Path) -> None:
    """The daemon's pod cannot make namespaces (seccomp, no capabilities): the settings
    send repository code to Jobs, in a namespace whose NetworkPolicy selects the label the
    adapter puts on them and allows no traffic, and whose admission refuses loose pods."""
    documents = _documents()
    [settings] = [d for d in documents if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == "reconciler-settings"]
    config = tmp_path / "reconciler.yaml"
    config.write_text(settings["data"]["reconciler.yaml"])
    loaded = load_settings(config, {})
    assert loaded.sandbox == "job" and loaded.sandbox_job is not None
    namespace = loaded.sandbox_job.namespace
    [policy] = [d for d in documents if d["kind"] == "NetworkPolicy"
                and d["metadata"]["namespace"] == namespace]
    assert policy["spec"]["podSelector"] == {"matchLabels": {NETWORK_LABEL: "none"}}
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "egress" not in policy["spec"] and "ingress" not in policy["spec"]
    [space] = [d for d in documents if d["kind"] == "Namespace"
               and d["metadata"]["name"] == namespace]
    assert space["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not [d for d in documents if d["kind"] != "NetworkPolicy"
                and d["metadata"].get("namespace") == namespace
                and d["kind"] not in ("Role", "RoleBinding")], "nothing else lives there"
    [gauntlet] = [d for d in documents if d["kind"] == "NetworkPolicy"
                  and d["spec"]["podSelector"] == {"matchLabels": {NETWORK_LABEL: "fetch"}}]
    ports = {p["port"] for rule in gauntlet["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 80, 443}, "gauntlet pods fetch models and resolve names, no more"
