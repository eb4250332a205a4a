"""deploy/ against the Kubernetes schemas, offline: every built-in kind is read into the
official client's models (types and required fields), and must come back out unchanged
(an unknown or misspelt field is dropped by the models, so it shows as a difference).
The ServiceMonitor, whose CRD schema is not at hand, gets a structural check. Then the
references between objects: selectors match the labels they target, port names exist,
volumes name objects that exist, and one image name is used everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from ruamel.yaml import YAML

from reconciler import __version__
from reconciler.daemon.httpd import MIN_SECRET_BYTES
from reconciler.settings import load_settings
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
# In deploy/ but deliberately not applied by `kubectl apply -k` (each file says why).
TEMPLATES = {"secret-git.yaml", "secret-webhook.yaml", "servicemonitor.yaml"}
CLUSTER_SCOPED = {"Namespace"}


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(path.read_text()) if d]


def _kustomization() -> dict[str, Any]:
    [kustomization] = _load(DEPLOY / "kustomization.yaml")
    return kustomization


def _applied() -> list[dict[str, Any]]:
    """The documents of the kustomization's own files (a folder it names, such as
    monitoring/, is a kustomization of its own, checked by its owner's tests)."""
    return [d for name in _kustomization()["resources"] if (DEPLOY / name).is_file()
            for d in _load(DEPLOY / name)]


def _everything() -> list[dict[str, Any]]:
    return _applied() + [d for name in sorted(TEMPLATES) for d in _load(DEPLOY / name)]


def _one(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _model_name(document: dict[str, Any]) -> str:
    version = document["apiVersion"].rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + document["kind"]


def _differences(original: Any, round_trip: Any, where: str = "") -> list[str]:
    """Where round_trip lacks or changes what original says (the models drop unknown
    fields and normalise nothing else that the manifests use)."""
    if isinstance(original, dict):
        if not isinstance(round_trip, dict):
            return [f"{where}: not an object"]
        return [d for key, value in original.items()
                for d in (_differences(value, round_trip[key], f"{where}.{key}")
                          if key in round_trip else [f"{where}.{key}: unknown field"])]
    if isinstance(original, list):
        if not isinstance(round_trip, list) or len(round_trip) != len(original):
            return [f"{where}: not the same list"]
        return [d for index, (a, b) in enumerate(zip(original, round_trip, strict=True))
                for d in _differences(a, b, f"{where}[{index}]")]
    return [] if original == round_trip else [f"{where}: {original!r} became {round_trip!r}"]


def _round_trip(document: dict[str, Any]) -> Any:
    client = kubernetes.client.ApiClient()
    model = client.deserialize(json.dumps(document), _model_name(document), "application/json")
    return client.sanitize_for_serialization(model)


def test_the_models_catch_what_this_check_relies_on() -> None:
    """The check itself: a wrong type, a missing required field and a misspelt field."""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"name": "http", "port": 9464}]}}
    assert _differences(service, _round_trip(service)) == []
    with pytest.raises(ValueError, match="port"):
        _round_trip({**service, "spec": {"ports": [{"name": "http", "port": "many"}]}})
    with pytest.raises(ValueError, match="port"):
        _round_trip({**service, "spec": {"ports": [{"name": "http"}]}})
    misspelt = {**service, "spec": {"prots": [{"port": 9464}]}}
    assert _differences(misspelt, _round_trip(misspelt)) == [".spec.prots: unknown field"]


def test_every_manifest_is_applied_or_a_declared_template() -> None:
    resources = set(_kustomization()["resources"])
    assert all((DEPLOY / name).is_file() or (DEPLOY / name / "kustomization.yaml").is_file()
               for name in resources)
    resources = {name for name in resources if (DEPLOY / name).is_file()}
    on_disk = {path.name for path in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == resources | TEMPLATES
    assert not resources & TEMPLATES


@pytest.mark.parametrize("name", sorted(
    path.name for path in DEPLOY.glob("*.yaml")
    if path.name not in ("kustomization.yaml", "servicemonitor.yaml")))
def test_each_manifest_matches_the_kubernetes_schema(name: str) -> None:
    for document in _load(DEPLOY / name):
        assert hasattr(kubernetes.client, _model_name(document)), document["kind"]
        differences = _differences(document, _round_trip(document))
        assert differences == [], f"{name} {document['kind']}: {differences}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"])
        assert ("namespace" in document["metadata"]) == \
            (document["kind"] not in CLUSTER_SCOPED), f"{name}: namespace"


def test_every_namespace_used_is_created() -> None:
    documents = _everything()
    created = {d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"}
    used = {d["metadata"]["namespace"] for d in documents if "namespace" in d["metadata"]}
    used |= {s["namespace"] for d in documents if d["kind"].endswith("Binding")
             for s in d["subjects"]}
    assert used == created
    assert "ml" in created, "the Targets' namespace (desired-state/targets.yaml)"


def test_the_service_selects_the_daemon_and_names_its_port() -> None:
    documents = _applied()
    deployment = _one(documents, "Deployment", "reconciler")
    service = _one(documents, "Service", "reconciler")
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    [container] = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports, f"no container port named {port['targetPort']}"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    # The annotations a pod-discovering Prometheus reads name the same port.
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert annotations["prometheus.io/path"] == "/metrics"
    # The port is the one the daemon listens on.
    settings = _one(documents, "ConfigMap", "reconciler-settings")["data"]["reconciler.yaml"]
    assert f':{ports["http"]}"' in settings


def test_the_service_monitor_scrapes_the_service() -> None:
    """Structural: the CRD's schema is not at hand offline."""
    service = _one(_applied(), "Service", "reconciler")
    [monitor] = _load(DEPLOY / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    duration = re.compile(r"([0-9]+(ms|s|m|h))+")
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert duration.fullmatch(endpoint["interval"])
        assert duration.fullmatch(endpoint["scrapeTimeout"])


def test_the_pod_mounts_what_the_settings_read(tmp_path: Path) -> None:
    """Every volume names an object deploy/ makes (or a template for one), and every file
    the settings name lies in a mounted volume under a key that object has."""
    documents = _everything()
    deployment = _one(documents, "Deployment", "reconciler")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert len(mounts) == len(container["volumeMounts"]) == len(volumes)
    _one(documents, "ServiceAccount", pod["serviceAccountName"])

    def keys_at(path: Path) -> set[str]:
        volume = mounts[str(path)]
        if "secret" in volume:
            secret = _one(documents, "Secret", volume["secret"]["secretName"])
            assert secret["metadata"]["namespace"] == deployment["metadata"]["namespace"]
            return set(secret["stringData"])
        configmap = _one(documents, "ConfigMap", volume["configMap"]["name"])
        return set(configmap["data"])

    settings_map = _one(documents, "ConfigMap", "reconciler-settings")
    config = Path(container["args"][container["args"].index("--config") + 1])
    assert config.name in keys_at(config.parent)
    written = tmp_path / "reconciler.yaml"
    written.write_text(settings_map["data"]["reconciler.yaml"])
    settings = load_settings(written, {})
    assert settings.credentials is not None and settings.credentials.password_file
    assert settings.webhook_secret_file is not None
    for secret_file in (settings.credentials.password_file, settings.webhook_secret_file):
        assert secret_file.name in keys_at(secret_file.parent), secret_file
    assert str(settings.state_dir) in mounts
    # Applied unchanged, the webhook template makes the daemon refuse to start
    # (WebhookSecretTooShort) rather than trust a secret published here.
    placeholder = _one(documents, "Secret", "reconciler-webhook")["stringData"]["secret"]
    assert len(placeholder.encode()) < MIN_SECRET_BYTES


def test_one_image_name_from_the_build_to_the_pods(tmp_path: Path) -> None:
    """kustomize rewrites containers' images but not the settings' text: the image the
    kustomization gives the Deployment is the one the settings give the sandbox Jobs, and
    the one scripts/build-images.sh tags."""
    documents = _applied()
    deployment = _one(documents, "Deployment", "reconciler")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    [rule] = _kustomization()["images"]
    name, _, tag = container["image"].rpartition(":")
    assert name == rule["name"], "the kustomization's images entry names the Deployment's"
    rendered = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"
    written = tmp_path / "reconciler.yaml"
    written.write_text(_one(documents, "ConfigMap",
                            "reconciler-settings")["data"]["reconciler.yaml"])
    settings = load_settings(written, {})
    assert settings.sandbox_job is not None
    assert settings.sandbox_job.image == rendered == f"localhost/reconciler:{__version__}"
    script = (REPO_ROOT / "scripts" / "build-images.sh").read_text()
    assert "daemon_image=localhost/reconciler:$version" in script
    assert "gauntlet_image=localhost/reconciler-gauntlet:$version" in script
