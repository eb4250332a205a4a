"""A Kubernetes target: ConfigMaps by server-side apply, Deployments restarted by a pod
template annotation, rollouts watched to health, pointer ConfigMaps with preconditions.

Observing a target costs one LIST of the ConfigMaps we manage there (by label), plus a GET
for each declared ConfigMap not yet ours; an unchanged object is never re-sent. A
ConfigMap is applied whole with the field manager ``reconciler``: the keys we manage
(named in an annotation) keep their live values except the one being changed, and keys
written by other managers are left alone.

Ownership: a declared ConfigMap that exists without our labels (made by hand, by Helm) is
never taken over unless the Target says ``adopt: true`` (Stalled ``NotOwned`` otherwise).
Applies are not forced: a field another manager owns is a 409, which is Stalled
``FieldConflict`` naming that manager; only fields that are already ours (a key we manage
that someone edited by hand: drift) are taken back with ``force``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.desired.documents import Target
from reconciler.durations import format_duration
from reconciler.errors import ReconcilerError, StalledError, TransientError
from reconciler.kube.api import APPLY, FIELD_MANAGER, MERGE, Cluster, Clusters, Conflict, NotFound
from reconciler.places import CommandResult, ContentStore
from reconciler.plan.observed import ObservedFile, ObservedPointer, ObservedTarget
from reconciler.vocabulary import Reason

if TYPE_CHECKING:
    from reconciler.kube.place import KubePlace

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
TARGET_LABEL = "reconciler.dev/target"
REVISION_ANNOTATION = "reconciler.dev/revision"
DIGEST_ANNOTATION = "reconciler.dev/content-sha256"
KEYS_ANNOTATION = "reconciler.dev/keys"
CONFLICT_RETRIES = 3
# Waiting reasons of a container that will not get better by waiting longer.
FAILING_REASONS = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
                             "InvalidImageName", "CreateContainerConfigError",
                             "CreateContainerError", "RunContainerError"})
POD_LOG_BYTES = 4 << 20  # of one pod's log, per read: a log check's bound
RESTARTS_CLIMBING = 2  # restarts of a new pod seen while we watch that fail a rollout


class NotOwned(StalledError):
    """A declared ConfigMap exists and is someone else's: never adopted unless asked."""

    reason = Reason.NOT_OWNED


class FieldConflict(StalledError):
    """Server-side apply refused: another manager owns a field we would change."""

    reason = Reason.FIELD_CONFLICT


def template_annotation(kind: str, name: str) -> str:
    """The pod template annotation that carries an object's digest into a Deployment."""
    return f"{kind.lower()}.{name}.reconciler.dev/sha256"


def pointer_value(digest: str, uri: str, revision: str, now: float) -> str:
    return json.dumps({"sha256": digest, "uri": uri, "revision": revision,
                       "time": datetime.fromtimestamp(now, UTC).isoformat(
                           timespec="seconds").replace("+00:00", "Z")}, sort_keys=True)


@dataclass(frozen=True, slots=True)
class LiveConfigMap:
    name: str
    resource_version: str
    data: Mapping[str, bytes]  # ``data`` as UTF-8 and ``binaryData`` decoded, by key
    managed_keys: frozenset[str]  # keys we applied (our annotation); empty if not ours
    owner: str | None = None  # who it belongs to, when it is not ours (for the message)


def live_configmap(item: Any, target: Target) -> LiveConfigMap:
    meta = item.metadata
    labels, annotations = meta.labels or {}, meta.annotations or {}
    ours = labels.get(MANAGED_BY_LABEL) == FIELD_MANAGER and \
        labels.get(TARGET_LABEL) == target.name
    keys = frozenset(filter(None, annotations.get(KEYS_ANNOTATION, "").split(","))) \
        if ours else frozenset()
    data = {key: value.encode() for key, value in (item.data or {}).items()}
    data.update((key, base64.b64decode(value))
                for key, value in (item.binary_data or {}).items())
    return LiveConfigMap(meta.name, meta.resource_version, data, keys,
                         None if ours else _owner(labels, meta.managed_fields or []))


def _owner(labels: Mapping[str, str], managed_fields: list[Any]) -> str:
    """Who a ConfigMap that is not ours belongs to, in words: its managed-by label (or the
    reconciler target it belongs to) and its field managers."""
    managers = sorted({str(entry.manager) for entry in managed_fields if entry.manager})
    said = f"{MANAGED_BY_LABEL}: {labels[MANAGED_BY_LABEL]}" if MANAGED_BY_LABEL in labels \
        else f"no {MANAGED_BY_LABEL} label"
    if labels.get(MANAGED_BY_LABEL) == FIELD_MANAGER:
        said += f", target {labels.get(TARGET_LABEL)}"
    return said + (f"; field managers {', '.join(managers)}" if managers else "")


def content_digest(data: Mapping[str, bytes]) -> str:
    """The digest of the keys we manage, as annotated on every apply: live data that no
    longer matches its annotation was changed by someone else."""
    return hashlib.sha256(b"".join(hashlib.sha256(key.encode() + b"\0" + data[key]).digest()
                                   for key in sorted(data))).hexdigest()


def changed_by_someone_else(item: Any, target: Target) -> bool:
    found = live_configmap(item, target)
    ours = {key: found.data[key] for key in found.managed_keys if key in found.data}
    annotations = item.metadata.annotations or {}
    return annotations.get(DIGEST_ANNOTATION) != content_digest(ours)


def _split(data: Mapping[str, bytes]) -> dict[str, dict[str, str]]:
    """UTF-8 text as ``data``, anything else as base64 ``binaryData``."""
    split: dict[str, dict[str, str]] = {"data": {}, "binaryData": {}}
    for key, value in data.items():
        try:
            split["data"][key] = value.decode("utf-8")
        except UnicodeDecodeError:
            split["binaryData"][key] = base64.b64encode(value).decode()
    return {field: values for field, values in split.items() if values}


def parse_pointer(path: str, content: bytes | None) -> ObservedPointer:
    if content is None:
        return ObservedPointer(path, None, None)
    raw = content.decode(errors="replace")
    try:
        value = json.loads(raw)
        digest = value["sha256"] if isinstance(value, dict) else None
    except ValueError:
        digest = None
    if not isinstance(digest, str) or len(digest) != 64:
        return ObservedPointer(path, raw, None, "not a pointer: expected JSON with 'sha256'")
    return ObservedPointer(path, raw, digest)


class KubernetesFleet:
    """Every Kubernetes target of a desired state, through one client per context."""

    def __init__(self, clusters: Clusters, store: ContentStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.clusters = clusters
        self.store = store
        self._clock = clock
        self._live: dict[str, dict[str, LiveConfigMap | None]] = {}

    def place(self, target: Target) -> KubePlace:
        from reconciler.kube.place import KubePlace  # the place builds on this module
        return KubePlace(self, self.store, target, self._clock)

    def finish_observing(self) -> None:
        """Nothing to persist: what was read lives in memory for this pass."""

    def cluster(self, target: Target) -> Cluster:
        return self.clusters.get(target.kube_context)

    def location(self, target: Target) -> str:
        return f"kubernetes {self.cluster(target).shown}, namespace {target.kube_namespace}"

    @staticmethod
    def namespace(target: Target) -> str:
        assert target.kube_namespace is not None
        return target.kube_namespace

    # Observing.

    def observe(self, target: Target, files: Iterable[str],
                pointers: Iterable[str]) -> ObservedTarget:
        """``files`` and ``pointers`` are ``configmap/key``; errors become the target's."""
        files, pointers = list(files), list(pointers)
        try:
            live = self._read_all(target, {p.split("/")[0] for p in files + pointers})
        except ReconcilerError as error:
            return ObservedTarget(target.name, self.location(target), {}, {},
                                  error=f"{error.reason}: {error}",
                                  transient=isinstance(error, TransientError))
        self._live[target.name] = live

        def value(path: str) -> bytes | None:
            name, _, key = path.partition("/")
            found = live.get(name)
            return None if found is None else found.data.get(key)

        observed_files = {}
        for path in files:
            content = value(path)
            observed_files[path] = ObservedFile(
                path, None if content is None else hashlib.sha256(content).hexdigest())
        return ObservedTarget(
            target.name, self.location(target), observed_files,
            {path: parse_pointer(path, value(path)) for path in pointers},
            managed={name: found.managed_keys for name, found in live.items()
                     if found is not None and found.managed_keys})

    def _read_all(self, target: Target, wanted: set[str]) -> dict[str, LiveConfigMap | None]:
        cluster, namespace = self.cluster(target), self.namespace(target)
        core = cluster.core()
        listed = cluster.call("list", "configmaps", namespace, core.list_namespaced_config_map,
                              namespace, label_selector=f"{MANAGED_BY_LABEL}={FIELD_MANAGER},"
                              f"{TARGET_LABEL}={target.name}")
        live: dict[str, LiveConfigMap | None] = {
            item.metadata.name: live_configmap(item, target) for item in listed.items}
        for name in sorted(wanted - live.keys()):
            live[name] = self._get(target, name)
        return live

    def _get(self, target: Target, name: str) -> LiveConfigMap | None:
        cluster, namespace = self.cluster(target), self.namespace(target)
        try:
            return live_configmap(cluster.call("get", "configmaps", namespace,
                                      cluster.core().read_namespaced_config_map, name,
                                      namespace), target)
        except NotFound:
            return None

    def read(self, target: Target, path: str) -> bytes | None:
        """A key's live content as last observed, for diffs; None when absent."""
        name, _, key = path.partition("/")
        found = self._live.get(target.name, {}).get(name)
        return None if found is None else found.data.get(key)

    def pointer_version(self, target: Target, name: str) -> str | None:
        found = self._live.get(target.name, {}).get(name)
        return None if found is None else found.resource_version

    # Changing ConfigMaps.

    def put(self, target: Target, path: str, content: bytes | None, revision: str, *,
            expect_version: str | None = None) -> None:
        """Set (or with None remove) one key, by server-side apply of the whole ConfigMap.

        With ``expect_version`` the write carries that resourceVersion as a precondition:
        a Conflict means someone changed the ConfigMap since we read it.
        """
        name, _, key = path.partition("/")
        for attempt in range(CONFLICT_RETRIES):
            found = self._live.get(target.name, {}).get(name)
            if found is not None and found.owner is not None and not target.adopt:
                raise NotOwned(
                    f"ConfigMap {self.namespace(target)}/{name} exists and is not reconciler's "
                    f"({found.owner}); it is left alone. Set adopt: true on Target "
                    f"{target.name} to take it over, or deliver to another ConfigMap")
            data = {k: found.data[k] for k in found.managed_keys if k in found.data} \
                if found is not None else {}
            if content is None:
                data.pop(key, None)
            else:
                data[key] = content
            foreign = found is not None and bool(set(found.data) - found.managed_keys)
            try:
                if not data and not foreign:  # nothing left in it: the ConfigMap goes
                    self.delete(target, name)
                    return
                self._apply(target, name, data, revision, expect_version)
                return
            except Conflict:
                if expect_version is not None or attempt == CONFLICT_RETRIES - 1:
                    raise
                self._live.setdefault(target.name, {})[name] = self._get(target, name)

    def _apply(self, target: Target, name: str, data: dict[str, bytes], revision: str,
               expect_version: str | None) -> None:
        cluster, namespace = self.cluster(target), self.namespace(target)
        digest = content_digest(data)
        metadata: dict[str, Any] = {
            "name": name, "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: FIELD_MANAGER, TARGET_LABEL: target.name},
            "annotations": {REVISION_ANNOTATION: revision, DIGEST_ANNOTATION: digest,
                            KEYS_ANNOTATION: ",".join(sorted(data))}}
        if expect_version is not None:
            metadata["resourceVersion"] = expect_version
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, **_split(data)}

        def apply(force: bool) -> Any:
            return cluster.call("patch", "configmaps", namespace,
                                cluster.core().patch_namespaced_config_map, name, namespace,
                                body, field_manager=FIELD_MANAGER, force=force,
                                _content_type=APPLY)

        try:
            applied = apply(force=False)
        except Conflict as conflict:
            if not conflict.fields:
                raise  # a stale resourceVersion: the caller re-reads
            found = self._live.get(target.name, {}).get(name)
            theirs = {field: manager for field, manager in conflict.fields.items()
                      if field not in _our_fields(found)}
            if theirs and not target.adopt:
                listed = ", ".join(f"{field} (managed by {manager!r})"
                                   for field, manager in sorted(theirs.items()))
                raise FieldConflict(
                    f"ConfigMap {namespace}/{name}: server-side apply conflicts with another "
                    f"manager on {listed}; reconciler does not take fields over. Remove them "
                    f"from that manager, or set adopt: true on Target {target.name}") from None
            applied = apply(force=True)  # our own fields edited by hand (drift), or adopt
        self._live.setdefault(target.name, {})[name] = live_configmap(applied, target)

    def delete(self, target: Target, name: str) -> None:
        """Delete a ConfigMap we manage, only if it is still the version we last saw."""
        cluster, namespace = self.cluster(target), self.namespace(target)
        found = self._live.get(target.name, {}).get(name)
        preconditions = {"resourceVersion": found.resource_version} if found else None
        with contextlib.suppress(NotFound):
            cluster.call("delete", "configmaps", namespace,
                         cluster.core().delete_namespaced_config_map, name, namespace,
                         body={"preconditions": preconditions} if preconditions else None)
        self._live.setdefault(target.name, {})[name] = None

    # Restarts and rollouts.

    def restart(self, target: Target, deployment: str, annotation: str,
                digest: str | None) -> CommandResult:
        """Put ``digest`` in the pod template: a rollout happens only if it changed."""
        cluster, namespace = self.cluster(target), self.namespace(target)
        patch = {"spec": {"template": {"metadata": {"annotations": {annotation: digest}}}}}
        try:
            cluster.call("patch", "deployments", namespace,
                         cluster.apps().patch_namespaced_deployment, deployment, namespace,
                         patch, field_manager=FIELD_MANAGER, _content_type=MERGE)
        except NotFound:
            return CommandResult(False, f"deployment {deployment} not found in namespace "
                                 f"{namespace}")
        return CommandResult(True, f"deployment/{deployment} pod template has "
                             f"{annotation}={digest[:12] if digest else 'none'}")

    def wait_rollout(self, target: Target, deployment: str, annotation: str,
                     digest: str | None, timeout: float, soak: float,
                     stop: threading.Event) -> CommandResult:
        """Ready: the controller saw the new template, every replica is updated and available
        and old pods are gone; then ``soak`` without a failing new pod. A new pod in
        CrashLoopBackOff, ImagePullBackOff (or alike) or restarting again and again fails it
        at once, naming the pod and the reason."""
        cluster, namespace = self.cluster(target), self.namespace(target)
        deadline = time.monotonic() + timeout
        soak_until: float | None = None
        first_restarts: dict[str, int] = {}
        progress = "not observed yet"
        while True:
            try:
                state = cluster.call("get", "deployments", namespace,
                                     cluster.apps().read_namespaced_deployment, deployment,
                                     namespace)
            except NotFound:
                return CommandResult(False, f"deployment {deployment} disappeared")
            failure = self._failing_pod(cluster, namespace, state, annotation, digest,
                                        first_restarts)
            if failure is not None:
                return CommandResult(False, f"rollout of deployment/{deployment} failed: "
                                     f"{failure}")
            stuck = _deadline_exceeded(state)
            if stuck is not None:
                return CommandResult(False, f"rollout of deployment/{deployment} failed: "
                                     f"{stuck}")
            done, progress = _rollout_progress(state)
            if done and soak_until is None:
                soak_until = time.monotonic() + soak
            if soak_until is not None and time.monotonic() >= soak_until:
                soaked = f", then soaked {format_duration(soak)}" if soak else ""
                return CommandResult(True, f"deployment/{deployment} rolled out: "
                                     f"{progress}{soaked}")
            if soak_until is None and time.monotonic() >= deadline:
                return CommandResult(False, f"rollout of deployment/{deployment} did not "
                                     f"finish within {format_duration(timeout)}: {progress}")
            if stop.wait(cluster.settings.poll_seconds):
                return CommandResult(False, f"stopped while deployment/{deployment} rolled "
                                     f"out ({progress})")

    def new_pod_logs(self, target: Target, deployment: str, annotation: str, digest: str,
                     container: str | None) -> dict[str, str]:
        """The logs of the deployment's pods that run ``digest`` (by pod name), each
        bounded to its first ``POD_LOG_BYTES``."""
        cluster, namespace = self.cluster(target), self.namespace(target)
        state = cluster.call("get", "deployments", namespace,
                             cluster.apps().read_namespaced_deployment, deployment, namespace)
        labels = (state.spec.selector.match_labels or {}) if state.spec.selector else {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = cluster.call("list", "pods", namespace, cluster.core().list_namespaced_pod,
                            namespace, label_selector=selector)
        logs = {}
        for pod in pods.items:
            if (pod.metadata.annotations or {}).get(annotation) != digest:
                continue  # an old pod: the analysis judges the new revision only
            extra = {"container": container} if container else {}
            logs[pod.metadata.name] = str(cluster.call(
                "get", "pods/log", namespace, cluster.core().read_namespaced_pod_log,
                pod.metadata.name, namespace, limit_bytes=POD_LOG_BYTES, **extra))
        return logs

    def _failing_pod(self, cluster: Cluster, namespace: str, state: Any, annotation: str,
                     digest: str | None, first_restarts: dict[str, int]) -> str | None:
        labels = (state.spec.selector.match_labels or {}) if state.spec.selector else {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = cluster.call("list", "pods", namespace, cluster.core().list_namespaced_pod,
                            namespace, label_selector=selector)
        for pod in pods.items:
            if (pod.metadata.annotations or {}).get(annotation) != digest:
                continue  # an old pod: its troubles are not this rollout's
            statuses = [*(pod.status.init_container_statuses or []),
                        *(pod.status.container_statuses or [])] if pod.status else []
            for status in statuses:
                waiting = status.state.waiting if status.state else None
                if waiting is not None and waiting.reason in FAILING_REASONS:
                    detail = f": {waiting.message}" if waiting.message else ""
                    return f"pod {pod.metadata.name} container {status.name} is " \
                           f"{waiting.reason}{detail}"
                seen = f"{pod.metadata.name}/{status.name}"
                first = first_restarts.setdefault(seen, status.restart_count or 0)
                if (status.restart_count or 0) - first >= RESTARTS_CLIMBING:
                    return f"pod {pod.metadata.name} container {status.name} restarts " \
                           f"again and again ({first} -> {status.restart_count})"
        return None


def _our_fields(found: LiveConfigMap | None) -> frozenset[str]:
    """Fields (as a 409 names them) that are ours to take back when someone edited them:
    the keys we manage, and our labels and annotations on a ConfigMap that is ours."""
    if found is None or found.owner is not None:
        return frozenset()
    return frozenset({*(f".{field}.{key}" for key in found.managed_keys
                        for field in ("data", "binaryData")),
                      *(f".metadata.labels.{label}" for label in (MANAGED_BY_LABEL,
                                                                  TARGET_LABEL)),
                      *(f".metadata.annotations.{annotation}" for annotation in (
                          REVISION_ANNOTATION, DIGEST_ANNOTATION, KEYS_ANNOTATION))})


def _deadline_exceeded(state: Any) -> str | None:
    """The Deployment controller's own verdict: progressDeadlineSeconds passed. Only once
    it has seen the new template: until then the condition may be an older rollout's."""
    status = state.status
    if status is None or (status.observed_generation or 0) < (state.metadata.generation or 0):
        return None
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return str(condition.message or "progress deadline exceeded")
    return None


def _rollout_progress(state: Any) -> tuple[bool, str]:
    generation = state.metadata.generation or 0
    status, wanted = state.status, state.spec.replicas if state.spec.replicas is not None else 1
    if status is None or (status.observed_generation or 0) < generation:
        return False, "the controller has not seen the new template yet"
    updated, available = status.updated_replicas or 0, status.available_replicas or 0
    total = status.replicas or 0
    progress = f"{updated} of {wanted} updated, {available} available"
    if total > updated:
        progress += f", {total - updated} old pods left"
    return updated >= wanted and available >= wanted and total <= wanted, progress

