"""Gauntlets as batch/v1 Jobs: how gates scale past one host.

The Job runs the same worker as a local gauntlet (``python -m reconciler.gauntlet.worker -``)
in the configured image, requesting ``nvidia.com/gpu``, on the configured nodes. The
request travels in an environment variable; the worker fetches and verifies the models
itself. The verdict is the last JSON line of the pod's log. A Job that outlives the
gauntlet's timeout is deleted, with its pods. The worker imports game modules, so its pod
is hardened like any pod running repository code (``codejobs.harden``: no service-account
token, non-root, no capabilities, read-only root), and labelled for the NetworkPolicy
that lets it fetch models and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from reconciler.desired.documents import Gauntlet
from reconciler.durations import format_duration
from reconciler.errors import ReconcilerError
from reconciler.kube.api import Clusters, NotFound
from reconciler.kube.codejobs import CODE_LABEL, NETWORK_LABEL, harden
from reconciler.kube.fleet import MANAGED_BY_LABEL
from reconciler.processes import last_json_object
from reconciler.settings import GauntletJobSettings
from reconciler.vocabulary import Reason

GAUNTLET_LABEL = "reconciler.dev/gauntlet"


class GauntletJobs:
    def __init__(self, clusters: Clusters, settings: GauntletJobSettings,
                 stop: threading.Event) -> None:
        self._cluster = clusters.get(settings.context)
        self._settings = settings
        self._stop = stop

    def manifest(self, name: str, gauntlet: Gauntlet, request: dict[str, Any],
                 timeout: float) -> dict[str, Any]:
        settings = self._settings
        limits = {"nvidia.com/gpu": str(settings.gpus)} if settings.gpus else {}
        labels = {MANAGED_BY_LABEL: "reconciler", GAUNTLET_LABEL: gauntlet.name,
                  CODE_LABEL: "gauntlet", NETWORK_LABEL: "fetch"}
        container: dict[str, Any] = {
            "name": "gauntlet", "image": settings.image,
            "command": ["python", "-m", "reconciler.gauntlet.worker", "-"],
            "env": [{"name": "RECONCILER_GAUNTLET_JOB", "value": json.dumps(request)},
                    {"name": "PYTHONUNBUFFERED", "value": "1"}],
            "resources": {"limits": limits},
        }
        pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        harden(pod_spec, container, scratch=None)  # models and their caches: node-sized
        if settings.node_selector:
            pod_spec["nodeSelector"] = dict(settings.node_selector)
        if settings.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in settings.tolerations]
        if settings.service_account:
            pod_spec["serviceAccountName"] = settings.service_account
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
                "spec": {"backoffLimit": 0, "activeDeadlineSeconds": int(timeout) + 60,
                         "ttlSecondsAfterFinished": 3600,
                         "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}

    def run(self, gauntlet: Gauntlet, request: dict[str, Any], timeout: float,
            progress: Callable[[str], None]) -> dict[str, Any]:
        name = f"gauntlet-{gauntlet.name[:40]}-{secrets.token_hex(4)}"
        try:
            return self._run(name, gauntlet, request, timeout, progress)
        except ReconcilerError as error:
            return {"passed": False, "reason": "GauntletError",
                    "error": f"gauntlet Job {name}: {error}"}

    def _run(self, name: str, gauntlet: Gauntlet, request: dict[str, Any], timeout: float,
             progress: Callable[[str], None]) -> dict[str, Any]:
        cluster, namespace = self._cluster, self._settings.namespace
        batch = cluster.batch()
        cluster.call("create", "jobs", namespace, batch.create_namespaced_job, namespace,
                     self.manifest(name, gauntlet, request, timeout))
        deadline = time.monotonic() + timeout
        progress(f"gauntlet {gauntlet.name}: Job {name} running in {namespace}")
        while True:
            job = cluster.call("get", "jobs", namespace, batch.read_namespaced_job, name,
                               namespace)
            status = job.status
            if status is not None and (status.succeeded or status.failed):
                return self._verdict(name, bool(status.succeeded))
            if self._stop.is_set():
                self._delete(name)
                return {"passed": False, "reason": Reason.GAUNTLET_STOPPED,
                        "error": f"gauntlet Job {name} was stopped; the Job was deleted"}
            if time.monotonic() >= deadline:
                self._delete(name)
                return {"passed": False, "reason": "GauntletTimeout",
                        "error": f"gauntlet Job {name} did not finish within "
                        f"{format_duration(timeout)}; the Job was deleted"}
            self._stop.wait(cluster.settings.poll_seconds)

    def _verdict(self, name: str, succeeded: bool) -> dict[str, Any]:
        cluster, namespace = self._cluster, self._settings.namespace
        core = cluster.core()
        pods = cluster.call("list", "pods", namespace, core.list_namespaced_pod, namespace,
                            label_selector=f"job-name={name}")
        log = ""
        if pods.items:
            pod = sorted(pods.items, key=lambda p: p.metadata.name)[-1].metadata.name
            log = cluster.call("get", "pods/log", namespace,
                               core.read_namespaced_pod_log, pod, namespace)
        last = last_json_object(log)
        if last is not None and last.get("event") == "result":
            last.pop("event")
            last["job"] = name
            return last
        detail = (last or {}).get("error") or (log.strip().splitlines() or ["no log"])[-1]
        state = "succeeded" if succeeded else "failed"
        return {"passed": False, "reason": "GauntletError",
                "error": f"gauntlet Job {name} {state} without a result: {detail}"}

    def _delete(self, name: str) -> None:
        cluster, namespace = self._cluster, self._settings.namespace
        with contextlib.suppress(NotFound):
            cluster.call("delete", "jobs", namespace, cluster.batch().delete_namespaced_job,
                         name, namespace, propagation_policy="Background")
