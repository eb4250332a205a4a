"""Repository code as batch/v1 Jobs (settings ``sandbox: job``): the cluster's sandbox.

The daemon's pod runs with seccomp ``RuntimeDefault`` and no capabilities, which forbid the
user namespaces bubblewrap needs. In a cluster a pod of its own is the sandbox instead:

- no service-account token (``automountServiceAccountToken: false``), no service links;
- non-root (uid 65534), seccomp ``RuntimeDefault``, every capability dropped, no privilege
  escalation, a read-only root with a size-limited emptyDir at /tmp;
- CPU, memory and scratch limits, ``activeDeadlineSeconds``, ``backoffLimit: 0``;
- labels that deploy/sandbox.yaml's NetworkPolicy selects to deny all traffic, unless the
  code declares ``network: true``; and a namespace of its own, holding no Secrets.

The request travels in an environment variable; the report is the last line of the pod's
log, read with a size limit and handed back unparsed (the caller validates it). The Job is
deleted once its report is read, at its deadline, or when the daemon stops.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import threading
import time
from typing import Any

from reconciler.coderun import (
    MAX_REPORT_BYTES,
    PAYLOAD_ENVIRONMENT_VARIABLE,
    CodeJob,
    CodeJobReport,
)
from reconciler.durations import format_duration
from reconciler.errors import ReconcilerError, StalledError
from reconciler.kube.api import Clusters, NotFound
from reconciler.kube.fleet import MANAGED_BY_LABEL
from reconciler.settings import SandboxJobSettings

CODE_LABEL = "reconciler.dev/code"  # what runs: strategy-check, gauntlet
# deploy/'s NetworkPolicies select it: "none" denies all traffic; "fetch" (gauntlets, which
# download the models they play) allows only DNS and HTTP(S) out; "allowed" is unselected.
NETWORK_LABEL = "reconciler.dev/network"
SANDBOX_UID = 65534
_SCRATCH = "64Mi"
_BACKSTOP_SECONDS = 30  # the cluster ends a Job this long after the daemon gave up on it


def harden(pod: dict[str, Any], container: dict[str, Any], scratch: str | None = _SCRATCH
           ) -> None:
    """The pod-level and container-level settings every pod running repository code gets
    (check Jobs and gauntlet Jobs alike): no token, no privilege, a read-only root and a
    scratch /tmp (``scratch`` its size; None where only the node's disk bounds it)."""
    pod["automountServiceAccountToken"] = False
    pod["enableServiceLinks"] = False
    pod["securityContext"] = {"runAsNonRoot": True, "runAsUser": SANDBOX_UID,
                              "runAsGroup": SANDBOX_UID,
                              "seccompProfile": {"type": "RuntimeDefault"}}
    pod.setdefault("volumes", []).append(
        {"name": "scratch", "emptyDir": {"sizeLimit": scratch} if scratch else {}})
    container["securityContext"] = {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    container.setdefault("volumeMounts", []).append({"name": "scratch", "mountPath": "/tmp"})
    container.setdefault("env", []).extend([{"name": "HOME", "value": "/tmp"},
                                            {"name": "TMPDIR", "value": "/tmp"}])


def _label_value(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower())[:40].strip("-") or "code"


class CodeJobs:
    """reconciler.coderun.CodeJobs on a cluster."""

    def __init__(self, clusters: Clusters, settings: SandboxJobSettings,
                 stop: threading.Event) -> None:
        self._cluster = clusters.get(settings.context)
        self._settings = settings
        self._stop = stop

    def identity(self) -> str:
        return f"job:{self._settings.image}"

    def manifest(self, name: str, job: CodeJob) -> dict[str, Any]:
        settings = self._settings
        labels = {MANAGED_BY_LABEL: "reconciler", CODE_LABEL: _label_value(job.purpose),
                  NETWORK_LABEL: "allowed" if job.network else "none",
                  "reconciler.dev/subject": _label_value(job.subject)}
        resources = {"cpu": settings.cpu, "memory": settings.memory,
                     "ephemeral-storage": _SCRATCH}
        container: dict[str, Any] = {
            "name": "code", "image": settings.image,
            "command": ["python", "-m", job.module],
            "env": [{"name": PAYLOAD_ENVIRONMENT_VARIABLE, "value": job.payload},
                    {"name": "PYTHONUNBUFFERED", "value": "1"}],
            "resources": {"limits": resources, "requests": resources},
        }
        pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        harden(pod, container)
        deadline = math.ceil(job.timeout_seconds + settings.start_seconds) + _BACKSTOP_SECONDS
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
                "spec": {"backoffLimit": 0, "activeDeadlineSeconds": deadline,
                         "ttlSecondsAfterFinished": 600,
                         "template": {"metadata": {"labels": labels}, "spec": pod}}}

    def run(self, job: CodeJob) -> CodeJobReport:
        cluster, namespace = self._cluster, self._settings.namespace
        name = f"{_label_value(job.purpose)[:20]}-{_label_value(job.subject)[:30]}-" \
               f"{secrets.token_hex(4)}"
        batch = cluster.batch()
        cluster.call("create", "jobs", namespace, batch.create_namespaced_job, namespace,
                     self.manifest(name, job))
        deadline = time.monotonic() + job.timeout_seconds + self._settings.start_seconds
        try:
            while True:
                status = cluster.call("get", "jobs", namespace, batch.read_namespaced_job,
                                      name, namespace).status
                if status is not None and (status.succeeded or status.failed):
                    return CodeJobReport(self._last_line(name), timed_out=False)
                if self._stop.is_set():
                    raise StalledError(f"the check Job {name} was stopped; the Job was "
                                       "deleted", reason="Stopped")
                if time.monotonic() >= deadline:
                    if not self._started(name):
                        raise StalledError(
                            f"the check Job {name} in {namespace} did not start within "
                            f"{format_duration(self._settings.start_seconds)} (image, quota "
                            "or scheduling); the Job was deleted", reason="SandboxJobPending")
                    return CodeJobReport(None, timed_out=True)
                self._stop.wait(cluster.settings.poll_seconds)
        finally:
            # A delete that fails too must not hide why the run ended; the Job's own
            # activeDeadlineSeconds and TTL remove it then.
            with contextlib.suppress(ReconcilerError):
                self._delete(name)

    def _pods(self, name: str) -> list[Any]:
        cluster, namespace = self._cluster, self._settings.namespace
        core = cluster.core()
        found = cluster.call("list", "pods", namespace, core.list_namespaced_pod, namespace,
                             label_selector=f"job-name={name}")
        return sorted(found.items, key=lambda pod: pod.metadata.name)

    def _started(self, name: str) -> bool:
        return any(pod.status is not None and pod.status.phase not in (None, "Pending")
                   for pod in self._pods(name))

    def _last_line(self, name: str) -> str | None:
        """The log's last line, cut one byte past the limit (so an oversized report shows
        as one); None without a pod or a log."""
        cluster, namespace = self._cluster, self._settings.namespace
        pods = self._pods(name)
        if not pods:
            return None
        core = cluster.core()
        try:
            log = cluster.call("get", "pods/log", namespace, core.read_namespaced_pod_log,
                               pods[-1].metadata.name, namespace, tail_lines=1,
                               limit_bytes=MAX_REPORT_BYTES + 1)
        except NotFound:
            return None
        lines = str(log or "").rstrip("\n").rsplit("\n", 1)
        last = lines[-1].encode()[:MAX_REPORT_BYTES + 1]
        return last.decode(errors="replace") or None

    def _delete(self, name: str) -> None:
        cluster, namespace = self._cluster, self._settings.namespace
        with contextlib.suppress(NotFound):
            cluster.call("delete", "jobs", namespace, cluster.batch().delete_namespaced_job,
                         name, namespace, propagation_policy="Background")
