"""kmock's KubernetesEmulator, extended with exactly the API semantics reconciler relies on.

kmock stores objects and serves list/watch/CRUD; it keeps no ``resourceVersion``, answers
no 409 on a stale precondition, treats server-side apply as a plain merge and runs no
controllers. :class:`ClusterEmulator` adds, as the real API server does:

- a cluster-wide ``resourceVersion`` counter on every write, ``uid`` and
  ``creationTimestamp`` on create, ``generation`` bumped when a ``spec`` changes;
- 409 Conflict when a write carries a ``metadata.resourceVersion`` that is not current,
  and when a create names an object that exists;
- server-side apply (``application/apply-patch+yaml``): ``fieldManager`` required,
  create-if-absent, and fields the manager applied before but no longer sends are removed
  (ownership tracked in ``managedFields`` for ``data``, labels and annotations); without
  ``force=true``, setting a field another manager owns to a different value is a 409
  whose ``details.causes`` name the manager and the field (``FieldManagerConflict``), with
  it the field changes hands; creates and merge patches record an ``Update`` entry for their
  ``fieldManager`` (default ``kubectl``) and take the fields they set from other managers;
- merge patches where ``null`` deletes; ``labelSelector`` equality on lists;
- namespaces: writes into a namespace that does not exist are 404 ``namespaces "x" not
  found``, lists there are empty;
- Deployments driven by a test: a ``pod_behavior`` callback says what a new pod template
  does (``Ready``, ``CrashLoopBackOff``, ``ImagePullBackOff``, ``RestartsClimbing``,
  ``Stalled``, ``ProgressDeadlineExceeded``) and the emulator sets status and pods like
  the controllers would;
- Jobs driven by a test: a ``job_behavior`` callback gives the outcome and the pod's log,
  served at ``pods/NAME/log`` (a Deployment's pods log what ``pod_log(pod)`` says);
  deleting a Job deletes its pods;
- watches (``?watch=true``) streaming ADDED/MODIFIED/DELETED of every write, filtered by
  namespace and label selector, from the moment they start (with a ``resourceVersion``)
  or with the current objects first (without one), ending after ``timeoutSeconds``;
- faults on demand: ``fail(...)`` answers the next matching requests with a status (500,
  403, ...) or holds them past the client's timeout.

It runs in a thread with its own event loop, on a real TCP port, so the synchronous
``kubernetes`` client (and daemons in other processes) talk to it over HTTP.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
from kmock import KubernetesEmulator, Server
from kmock._internal import dicts, enums, k8s, references, rendering

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
RESOURCES = {  # plural -> (group/version, kind, namespaced)
    "namespaces": ("v1", "Namespace", False),
    "configmaps": ("v1", "ConfigMap", True),
    "secrets": ("v1", "Secret", True),
    "pods": ("v1", "Pod", True),
    "deployments": ("apps/v1", "Deployment", True),
    "jobs": ("batch/v1", "Job", True),
    "leases": ("coordination.k8s.io/v1", "Lease", True),
}
# Fields whose ownership server-side apply tracks (enough for what reconciler applies).
OWNED_MAPS = (("data",), ("binaryData",), ("metadata", "labels"), ("metadata", "annotations"))

PodBehavior = Callable[[dict[str, Any]], str]  # pod template -> what its pods do
JobBehavior = Callable[[dict[str, Any]], tuple[str, str]]  # Job -> (Complete|Failed|Hang, log)


@dataclass
class Fault:
    method: str  # GET, PATCH, POST, DELETE or * for any
    plural: str  # configmaps, deployments, ... or * for any
    status: int  # an HTTP status, or 0 to hang until the client gives up
    times: int
    message: str = ""


@dataclass
class Watcher:
    plural: str
    namespace: str | None
    selector: str
    queue: asyncio.Queue[dict[str, Any]]
    loop: asyncio.AbstractEventLoop


def _selected(obj: dict[str, Any], namespace: str | None, selector: str) -> bool:
    if namespace is not None and obj["metadata"].get("namespace") != namespace:
        return False
    labels = obj["metadata"].get("labels", {})
    return all(labels.get(label) == value for label, _, value in
               (term.partition("=") for term in filter(None, selector.split(","))))


@dataclass
class Counters:
    """Requests seen, by (method, plural, subresource); what the benchmarks count."""

    by_kind: dict[tuple[str, str], int] = field(default_factory=dict)

    def total(self) -> int:
        return sum(self.by_kind.values())


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str, details: Any = None) -> k8s.KubernetesError:
    return k8s.KubernetesError(status=status, reason=reason, message=message,
                               details=details or {})


def _get(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        obj = obj.get(part) or {}
    return obj


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386), kmock's own: maps merge, ``None`` deletes."""
    return copy.deepcopy(dict(dicts.merge_patch_dict(base, patch)))


@attrs.define(kw_only=True)
class ClusterEmulator(KubernetesEmulator):
    pod_behavior: PodBehavior = attrs.field(default=lambda template: "Ready")
    job_behavior: JobBehavior = attrs.field(
        default=lambda job: ("Complete", json.dumps({"event": "result", "passed": True})))
    namespaces: set[str] = attrs.field(factory=lambda: {"default"})
    faults: list[Fault] = attrs.field(factory=list)
    counters: Counters = attrs.field(factory=Counters)
    logs: dict[tuple[str, str], str] = attrs.field(factory=dict)
    # What a Deployment's pod has logged so far, asked at each read (analysis log checks).
    pod_log: Callable[[dict[str, Any]], str] = attrs.field(default=lambda pod: "")
    watchers: list[Watcher] = attrs.field(factory=list)
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000), init=False)
    _state: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for plural, (group_version, kind, namespaced) in RESOURCES.items():
            info = self.resources[f"{group_version}/{plural}"]
            info.kind, info.namespaced = kind, namespaced
            info.verbs = {"get", "list", "watch", "create", "patch", "delete"}

    # The store, by (plural, namespace, name); kmock's own object views underneath.

    def _key(self, plural: str, namespace: str | None, name: str) -> Any:
        group, _, version = RESOURCES[plural][0].rpartition("/")
        return (references.resource(group=group, version=version, plural=plural), namespace,
                name)

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A deep copy of the stored object, or None (tests read through this)."""
        with self._state:
            return self._read(plural, namespace, name)

    def _read(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = self._key(plural, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def _list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        resource = self._key(plural, None, "")[0]
        found = []
        for (res, ns, _), obj in self.objects.items():
            if res == resource and (namespace is None or ns == namespace) and not obj.deleted:
                found.append(copy.deepcopy(obj.raw))
        return sorted(found, key=lambda o: o["metadata"]["name"])

    def _write(self, plural: str, obj: dict[str, Any], *, created: bool = False) -> dict[str, Any]:
        """Store ``obj`` with a new resourceVersion (and identity, when created)."""
        meta = obj.setdefault("metadata", {})
        group_version, kind, _ = RESOURCES[plural]
        obj["apiVersion"], obj["kind"] = group_version, kind
        meta["resourceVersion"] = str(next(self._versions))
        if created:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if "spec" in obj and plural in ("deployments", "jobs"):
                meta["generation"] = 1
        key = self._key(plural, meta.get("namespace"), meta["name"])
        if key in self.objects and not self.objects[key].deleted:
            self.objects[key].history.append(obj)
        else:
            self.objects[key] = [obj]
        self._publish(plural, "ADDED" if created else "MODIFIED", obj)
        return copy.deepcopy(obj)

    def _publish(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        """To every watch that selects ``obj``; from any thread (tests write from theirs)."""
        for watcher in self.watchers:
            if watcher.plural == plural and _selected(obj, watcher.namespace, watcher.selector):
                event = {"type": kind, "object": copy.deepcopy(obj)}
                watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, event)

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object as an operator with kubectl would (tests seed with it)."""
        with self._state:
            meta = obj["metadata"]
            existing = self._read(plural, meta.get("namespace"), meta["name"])
            if existing is not None:
                obj = copy.deepcopy(obj)
                obj["metadata"] = {**existing["metadata"], **obj["metadata"]}
                if obj.get("spec") != existing.get("spec") and "generation" in obj["metadata"]:
                    obj["metadata"]["generation"] += 1
            stored = self._write(plural, copy.deepcopy(obj), created=existing is None)
            if plural == "deployments":
                self._drive_deployment(stored)
            return stored

    def delete_object(self, plural: str, namespace: str | None, name: str) -> None:
        with self._state:
            self._delete(plural, namespace, name)

    def _delete(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = self._key(plural, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        last = copy.deepcopy(self.objects[key].raw)
        self.objects[key].delete()
        last["metadata"]["resourceVersion"] = str(next(self._versions))
        self._publish(plural, "DELETED", last)
        if plural == "namespaces":
            self.namespaces.discard(name)
        if plural == "jobs":
            for pod in self._list("pods", namespace):
                if pod["metadata"].get("labels", {}).get("job-name") == name:
                    self._delete("pods", namespace, pod["metadata"]["name"])
        return last

    # Faults.

    def fail(self, method: str, plural: str, status: int, times: int = 1,
             message: str = "") -> None:
        """Answer the next ``times`` matching requests with ``status`` (0: never answer)."""
        with self._state:
            self.faults.append(Fault(method.upper(), plural, status, times, message))

    def _fault(self, method: str, plural: str) -> Fault | None:
        with self._state:
            for fault in self.faults:
                if fault.times > 0 and fault.method in ("*", method) \
                        and fault.plural in ("*", plural):
                    fault.times -= 1
                    return fault
        return None

    # Controllers, as far as tests drive them.

    def _drive_deployment(self, deployment: dict[str, Any]) -> None:
        """What the Deployment and ReplicaSet controllers and the kubelet would make of the
        current pod template: pods carrying its labels and annotations, and a status."""
        meta, spec = deployment["metadata"], deployment["spec"]
        namespace, name = meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        template = spec.get("template", {})
        behavior = self.pod_behavior(template)
        template_hash = uuid.uuid5(uuid.NAMESPACE_OID,
                                   json.dumps(template, sort_keys=True)).hex[:10]
        old = [p for p in self._list("pods", namespace)
               if p["metadata"].get("labels", {}).get("app.kubernetes.io/deployment") == name]
        new_pods = [p for p in old if p["metadata"]["labels"].get("pod-template-hash")
                    == template_hash]
        if not new_pods:
            count = replicas if behavior != "Stalled" else 0
            for index in range(count):
                pod_meta = copy.deepcopy(template.get("metadata", {}))
                pod_meta.setdefault("labels", {}).update(
                    {"pod-template-hash": template_hash,
                     "app.kubernetes.io/deployment": name})
                pod_meta.update(namespace=namespace, name=f"{name}-{template_hash}-{index}")
                if behavior == "RestartsClimbing":
                    pod_meta.setdefault("annotations", {})["emulator/restarts"] = "climbing"
                pod_spec = copy.deepcopy(template.get("spec") or {})
                pod_spec.setdefault("containers", [{"name": "main", "image": "unknown"}])
                new_pods.append(self._write("pods", {"metadata": pod_meta, "spec": pod_spec,
                                                     "status": _pod_status(behavior)},
                                            created=True))
        if behavior in ("Ready", "RestartsClimbing"):
            for pod in old:
                if pod["metadata"]["labels"].get("pod-template-hash") != template_hash:
                    self._delete("pods", namespace, pod["metadata"]["name"])
        ready = behavior in ("Ready", "RestartsClimbing")
        stale = len([p for p in old if p["metadata"]["labels"].get("pod-template-hash")
                     != template_hash])
        status = {"observedGeneration": meta.get("generation", 1),
                  "replicas": replicas if ready else replicas + min(stale, replicas),
                  "updatedReplicas": len(new_pods),
                  "readyReplicas": replicas if ready else min(stale, replicas),
                  "availableReplicas": replicas if ready else min(stale, replicas)}
        if behavior == "ProgressDeadlineExceeded":
            status["conditions"] = [{
                "type": "Progressing", "status": "False", "reason": behavior,
                "message": f'ReplicaSet "{name}-{template_hash}" has timed out progressing.'}]
        deployment["status"] = status
        self._write("deployments", deployment)

    def _climb_restarts(self, namespace: str) -> None:
        """Pods that keep restarting restart once more each time someone looks."""
        for pod in self._list("pods", namespace):
            statuses = pod.get("status", {}).get("containerStatuses", [])
            if pod["metadata"].get("annotations", {}).get("emulator/restarts") == "climbing":
                for status in statuses:
                    status["restartCount"] += 1
                self._write("pods", pod)

    def _start_job(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        outcome, log = self.job_behavior(job)
        if outcome == "Hang":
            return
        pod_name = f"{meta['name']}-pod"
        self._write("pods", {"metadata": {"name": pod_name, "namespace": meta["namespace"],
                                          "labels": {"job-name": meta["name"],
                                                     "batch.kubernetes.io/job-name":
                                                         meta["name"]}},
                             "spec": copy.deepcopy(job["spec"]["template"]["spec"]),
                             "status": {"phase": "Succeeded" if outcome == "Complete"
                                        else "Failed"}}, created=True)
        self.logs[(meta["namespace"], pod_name)] = log
        key = "succeeded" if outcome == "Complete" else "failed"
        job["status"] = {key: 1, "conditions": [{"type": outcome, "status": "True"}]}
        self._write("jobs", job)

    # HTTP.

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.resource.plural not in RESOURCES:
            return await super()._handle(request)
        plural = request.resource.plural
        method = str(request.method.value if hasattr(request.method, "value")
                     else request.method).upper()
        kind = (method, plural + (f"/{request.subresource}" if request.subresource else ""))
        with self._state:
            self.counters.by_kind[kind] = self.counters.by_kind.get(kind, 0) + 1
        fault = self._fault(method, plural)
        if fault is None and request.action == enums.action.WATCH:
            return await self._watch(request, plural)
        try:
            if fault is not None:
                if fault.status == 0:
                    await asyncio.sleep(3600)
                raise _error(fault.status, "Forbidden" if fault.status == 403
                             else "InternalError", fault.message or f"injected {fault.status}")
            with self._state:
                payload, status = self._serve(request, method, plural)
        except k8s.KubernetesError as error:
            return await self._render_error(error)
        if isinstance(payload, str):
            return aiohttp.web.Response(text=payload, status=status)
        return aiohttp.web.json_response(payload, status=status)

    async def _watch(self, request: rendering.Request,
                     plural: str) -> aiohttp.web.StreamResponse:
        selector = request.params.get("labelSelector", "")
        watcher = Watcher(plural, request.namespace, selector, asyncio.Queue(),
                          asyncio.get_running_loop())
        with self._state:
            initial = [] if request.params.get("resourceVersion") else [
                {"type": "ADDED", "object": o} for o in self._list(plural, request.namespace)
                if _selected(o, None, selector)]
            self.watchers.append(watcher)
        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        deadline = asyncio.get_running_loop().time() + float(
            request.params.get("timeoutSeconds", 3600))
        try:
            for event in initial:
                await response.write(json.dumps(event).encode() + b"\n")
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), left)
                except TimeoutError:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except ConnectionResetError:
            pass  # the client went away
        finally:
            with self._state:
                self.watchers.remove(watcher)
        return response

    def _serve(self, request: rendering.Request, method: str,
               plural: str) -> tuple[dict[str, Any] | str, int]:
        namespace, name = request.namespace, request.name
        _, kind, namespaced = RESOURCES[plural]
        if method == "GET" and name is None:
            if plural == "pods" and namespace:
                self._climb_restarts(namespace)
            selector = request.params.get("labelSelector", "")
            items = [o for o in self._list(plural, namespace)
                     if _selected(o, None, selector)]
            return {"apiVersion": RESOURCES[plural][0], "kind": f"{kind}List",
                    "metadata": {"resourceVersion": str(next(self._versions))},
                    "items": items}, 200
        if method == "GET" and request.subresource == "log" and plural == "pods":
            assert namespace is not None and name is not None
            pod = self._read("pods", namespace, name)
            if pod is None:
                raise _not_found(plural, name)
            if (namespace, name) in self.logs:
                return self.logs[(namespace, name)], 200
            return self.pod_log(pod), 200
        if method == "GET":
            assert name is not None
            found = self._read(plural, namespace, name)
            if found is None:
                raise _not_found(plural, name)
            return found, 200
        body: dict[str, Any] = request.data if isinstance(request.data, dict) else {}
        if namespaced and namespace not in self.namespaces:
            raise _error(404, "NotFound", f'namespaces "{namespace}" not found',
                         {"name": namespace, "kind": "namespaces"})
        if method == "POST":
            _take_fields(body, body, _manager(request), "Update")
            name = body.get("metadata", {}).get("name")
            if not name:
                raise _error(422, "Invalid", f"{kind} is invalid: metadata.name: Required value")
            if self._read(plural, namespace, name) is not None:
                raise _error(409, "AlreadyExists", f'{plural} "{name}" already exists')
            body.setdefault("metadata", {})["namespace"] = namespace
            body["metadata"].pop("resourceVersion", None)
            stored = self._write(plural, body, created=True)
            if plural == "namespaces":
                self.namespaces.add(name)
            if plural == "deployments":
                self._drive_deployment(stored)
                stored = self._read(plural, namespace, name) or stored
            if plural == "jobs":
                self._start_job(stored)
                stored = self._read(plural, namespace, name) or stored
            return stored, 201
        assert name is not None
        if method == "DELETE":
            removed = self._delete(plural, namespace, name)
            if removed is None:
                raise _not_found(plural, name)
            return removed, 200
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0]
            if content_type == APPLY_CONTENT_TYPE:
                return self._apply(request, plural, namespace, name, body)
            current = self._read(plural, namespace, name)
            if current is None:
                raise _not_found(plural, name)
            self._precondition(plural, name, current, body)
            merged = _merge(current, body)
            _take_fields(merged, body, _manager(request), "Update")
            return self._update(plural, current, merged), 200
        raise _error(405, "MethodNotAllowed", f"{method} is not emulated")

    def _precondition(self, plural: str, name: str, current: dict[str, Any] | None,
                      body: dict[str, Any]) -> None:
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted is None:
            return
        if current is None or current["metadata"]["resourceVersion"] != wanted:
            raise _error(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                         "the object has been modified; please apply your changes to the "
                         "latest version and try again")

    def _update(self, plural: str, current: dict[str, Any],
                merged: dict[str, Any]) -> dict[str, Any]:
        merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if merged == current:
            return current  # a no-op write keeps its resourceVersion, as on a real server
        if "generation" in current["metadata"] and merged.get("spec") != current.get("spec"):
            merged["metadata"]["generation"] = current["metadata"]["generation"] + 1
        stored = self._write(plural, merged)
        if plural == "deployments":
            self._drive_deployment(stored)
            stored = self._read(plural, stored["metadata"]["namespace"],
                                stored["metadata"]["name"]) or stored
        return stored

    def _apply(self, request: rendering.Request, plural: str, namespace: str | None,
               name: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        manager = request.params.get("fieldManager")
        if not manager:
            raise _error(400, "BadRequest", "PATCH /apply requires fieldManager to be set")
        current = self._read(plural, namespace, name)
        self._precondition(plural, name, current, body)
        applied = copy.deepcopy(body)
        applied.setdefault("metadata", {}).pop("resourceVersion", None)
        owned = {path: sorted(_get(applied, path)) for path in OWNED_MAPS
                 if _get(applied, path)}
        entry = {"manager": manager, "operation": "Apply", "apiVersion": RESOURCES[plural][0],
                 "time": _now(), "fieldsType": "FieldsV1",
                 "fieldsV1": {"/".join(path): keys for path, keys in owned.items()}}
        if current is None:
            applied["metadata"].update(namespace=namespace, name=name, managedFields=[entry])
            return self._write(plural, applied, created=True), 201
        forced = str(request.params.get("force", "")).lower() == "true"
        if not forced:  # an equal value is shared; a different one is a conflict
            _refuse_conflicts(plural, name, current, applied, manager, owned)
        merged = copy.deepcopy(current)
        if forced:
            _take_fields(merged, applied, manager, "Apply", record=False)
        fields = merged["metadata"].get("managedFields", [])
        before = next((f for f in fields if f["manager"] == manager
                       and f["operation"] == "Apply"), None)
        if before is not None:  # fields this manager applied before and no longer sends
            for joined, keys in before["fieldsV1"].items():
                path = tuple(joined.split("/"))
                container = _get(merged, path)
                for key in set(keys) - set(owned.get(path, [])):
                    container.pop(key, None)
        merged = _merge(merged, applied)
        merged["metadata"]["managedFields"] = [
            f for f in fields if not (f["manager"] == manager and f["operation"] == "Apply")
        ] + [entry]
        if before is not None and {k: v for k, v in before.items() if k != "time"} == \
                {k: v for k, v in entry.items() if k != "time"}:
            merged["metadata"]["managedFields"] = fields  # unchanged ownership: no new time
        return self._update(plural, current, merged), 200


def _manager(request: rendering.Request) -> str:
    return str(request.params.get("fieldManager") or "kubectl")


def _owned_keys(body: dict[str, Any]) -> dict[str, list[str]]:
    return {"/".join(path): sorted(_get(body, path)) for path in OWNED_MAPS if _get(body, path)}


def _take_fields(stored: dict[str, Any], body: dict[str, Any], manager: str, operation: str,
                 *, record: bool = True) -> None:
    """The fields ``body`` sets change hands to ``manager``: removed from every other
    manager's entry (and, with ``record``, added to this manager's ``operation`` entry)."""
    taken = _owned_keys(body)
    if not taken:
        return
    meta = stored.setdefault("metadata", {})
    entries = []
    for entry in meta.get("managedFields") or []:
        if entry["manager"] != manager:
            fields = {joined: [k for k in keys if k not in taken.get(joined, [])]
                      for joined, keys in entry["fieldsV1"].items()}
            entry = {**entry, "fieldsV1": {j: k for j, k in fields.items() if k}}
            if not entry["fieldsV1"]:
                continue
        elif record and entry["operation"] == operation:
            fields = {j: sorted(set(k) | set(taken.get(j, [])))
                      for j, k in {**taken, **entry["fieldsV1"]}.items()}
            entry = {**entry, "fieldsV1": fields, "time": _now()}
            taken = {}
        entries.append(entry)
    if record and taken:
        entries.append({"manager": manager, "operation": operation, "apiVersion": "v1",
                        "time": _now(), "fieldsType": "FieldsV1", "fieldsV1": taken})
    meta["managedFields"] = entries


def _refuse_conflicts(plural: str, name: str, current: dict[str, Any],
                      applied: dict[str, Any], manager: str,
                      owned: dict[tuple[str, ...], list[str]]) -> None:
    """A non-forced apply may not change a field another manager owns: 409, as the API
    server answers, with one ``FieldManagerConflict`` cause per field."""
    causes = []
    for entry in current["metadata"].get("managedFields") or []:
        if entry["manager"] == manager:
            continue
        for joined, keys in entry["fieldsV1"].items():
            path = tuple(joined.split("/"))
            for key in sorted(set(keys) & set(owned.get(path, []))):
                if _get(current, path).get(key) != _get(applied, path).get(key):
                    causes.append({"reason": "FieldManagerConflict",
                                   "message": f'conflict with "{entry["manager"]}" using v1',
                                   "field": "." + ".".join((*path, key))})
    if causes:
        listed = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
        raise _error(409, "Conflict", f"Apply failed with {len(causes)} conflict"
                     f"{'s' if len(causes) > 1 else ''}: {listed}",
                     {"name": name, "kind": plural, "causes": causes})


def _not_found(plural: str, name: str) -> k8s.KubernetesError:
    return _error(404, "NotFound", f'{plural} "{name}" not found',
                  {"name": name, "kind": plural})


_IMAGE = {"image": "runner:1", "imageID": "sha256:" + "0" * 64}


def _pod_status(behavior: str) -> dict[str, Any]:
    waiting = {"CrashLoopBackOff": ("CrashLoopBackOff", 4), "ImagePullBackOff":
               ("ImagePullBackOff", 0)}.get(behavior)
    if waiting is not None:
        reason, restarts = waiting
        return {"phase": "Pending" if reason == "ImagePullBackOff" else "Running",
                "containerStatuses": [{"name": "main", "ready": False, **_IMAGE,
                                       "restartCount": restarts,
                                       "state": {"waiting": {"reason": reason,
                                                             "message": f"back-off ({reason})"}}}]}
    ready = behavior in ("Ready", "RestartsClimbing")
    return {"phase": "Running" if behavior != "Stalled" else "Pending",
            "containerStatuses": [{"name": "main", "ready": ready, "restartCount": 0, **_IMAGE,
                                   "state": {"running": {"startedAt": _now()}}}]}


class RunningCluster:
    """A :class:`ClusterEmulator` served on 127.0.0.1 from a thread of its own."""

    def __init__(self) -> None:
        self.emulator = ClusterEmulator()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._serve, name="kmock", daemon=True)

    def __enter__(self) -> RunningCluster:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the emulated API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        stopping = self._stopping
        assert stopping is not None
        self._loop.call_soon_threadsafe(stopping.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        async with self.emulator, Server(self.emulator) as server:
            self.url = f"http://{server.host}:{server.port}"
            self._started.set()
            await self._stopping.wait()

    def kubeconfig(self, path: Path, contexts: dict[str, str] | None = None) -> Path:
        """A kubeconfig with one context per name (all on this server), default ``kmock``."""
        contexts = contexts or {"kmock": "default"}
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": name, "context": {"cluster": "kmock", "user": "tester",
                                                    "namespace": namespace}}
                         for name, namespace in contexts.items()],
            "current-context": next(iter(contexts)),
        }
        path.write_text(json.dumps(config))
        return path
