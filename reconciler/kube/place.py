"""A Kubernetes namespace as a place for the executor's steps (see places.py).

A restart puts the content digest in the Deployment's pod template; the check is the
rollout (and the health ``soak``, watching the new pods). A flip writes the pointer key
with the resourceVersion we last read as a precondition; a 409 surfaces as
:class:`PointerConflict`, and the pass re-reads and re-plans.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from reconciler.desired.documents import Desired, Health, Model, Restart, Target
from reconciler.errors import ReconcilerError, ReplanNeeded
from reconciler.kube.api import Conflict
from reconciler.kube.fleet import (
    KubernetesFleet,
    parse_pointer,
    pointer_value,
    template_annotation,
)
from reconciler.places import CommandResult, ContentStore, LogReader, LogUnavailable
from reconciler.plan.planner import address_of


class PointerConflict(ReplanNeeded):
    """Someone else changed the pointer ConfigMap since we read it."""

    reason = "PointerConflict"


class KubePlace:
    def __init__(self, kube: KubernetesFleet, store: ContentStore, target: Target,
                 clock: Any = time.time) -> None:
        self.kube = kube
        self.store = store
        self.target = target
        self._clock = clock

    @property
    def where(self) -> str:
        return self.kube.location(self.target)

    def preserve(self, address: str) -> None:
        content = self.kube.read(self.target, address)
        if content is not None:
            self.store.put(content)

    def write(self, address: str, content: bytes, mode: int | None, revision: str) -> None:
        self.kube.put(self.target, address, content, revision)

    def remove(self, address: str, revision: str) -> None:
        self.kube.put(self.target, address, None, revision)

    def restart_detail(self, restart: Restart) -> dict[str, Any]:
        return {"deployment": restart.deployment}

    def restart(self, action_kind: str, action_name: str, restart: Restart,
                digest: str | None, revision: str) -> CommandResult:
        assert restart.deployment is not None
        return self.kube.restart(self.target, restart.deployment,
                                 template_annotation(action_kind, action_name), digest)

    def has_check(self, restart: Restart | None, health: Health | None) -> bool:
        return restart is not None

    def check(self, action_kind: str, action_name: str, restart: Restart | None,
              health: Health | None, digest: str | None, revision: str,
              stop: threading.Event) -> CommandResult:
        assert restart is not None and restart.deployment is not None
        return self.kube.wait_rollout(self.target, restart.deployment,
                                      template_annotation(action_kind, action_name), digest,
                                      restart.timeout_seconds,
                                      health.soak_seconds if health else 0.0, stop)

    def workload(self, action_kind: str, action_name: str, restart: Restart | None,
                 digest: str, revision: str) -> KubeWorkload:
        return KubeWorkload(self, template_annotation(action_kind, action_name),
                            restart.deployment if restart is not None else None, digest)

    def pointer_before(self, model: Model, desired: Desired) -> str | None:
        content = self.kube.read(self.target, address_of(model, self.target))
        return None if content is None else content.decode()

    def _put_pointer(self, model: Model, value: str | None, revision: str) -> None:
        address = address_of(model, self.target)
        name = address.split("/")[0]
        try:
            self.kube.put(self.target, address, None if value is None else value.encode(),
                          revision, expect_version=self.kube.pointer_version(self.target, name))
        except Conflict as error:
            raise PointerConflict(f"the pointer ConfigMap {name} changed since it was read; "
                                  f"re-reading and re-planning ({error})") from None

    def flip(self, model: Model, digest: str, revision: str) -> None:
        self._put_pointer(model, pointer_value(digest, model.artifact.uri, revision,
                                               self._clock()), revision)

    def point_back(self, model: Model, previous: str | None, revision: str) -> None:
        self._put_pointer(model, previous, revision)

    def pointed(self, model: Model) -> str | None:
        content = self.kube.read(self.target, address_of(model, self.target))
        if content is None:
            return None
        return parse_pointer("", content).sha256


class KubeWorkload:
    """What an analysis looks at on Kubernetes: the logs of the new pods (those whose
    template carries the new digest); commands do not run here (validation says so)."""

    def __init__(self, place: KubePlace, annotation: str, deployment: str | None,
                 digest: str) -> None:
        self._place, self._annotation = place, annotation
        self._deployment, self._digest = deployment, digest

    def log(self, path: str | None, container: str | None) -> LogReader:
        deployment = self._deployment
        if deployment is None:
            raise LogUnavailable("a log check on Kubernetes reads the new pods of "
                                 "'restart.deployment'; none is declared")
        place = self._place
        return PodLogs(lambda: place.kube.new_pod_logs(place.target, deployment,
                                                       self._annotation, self._digest,
                                                       container), f"deployment/{deployment}")

    def command(self, argv: tuple[str, ...], timeout: float) -> CommandResult:
        return CommandResult(False, "command checks run on local targets only")


class PodLogs:
    """The lines each new pod logged since the previous call (pods that appear later are
    read from their first line: they started after the change, and so is a restarted
    container, whose log the API gives from its start: shorter, or another first line)."""

    def __init__(self, fetch: Callable[[], dict[str, str]], shown: str) -> None:
        self._fetch = fetch
        self._shown = shown
        self._seen: dict[str, tuple[int, str]] = {}  # pod -> lines read, its first line

    def lines(self) -> list[str]:
        try:
            logs = self._fetch()
        except ReconcilerError as error:
            raise LogUnavailable(f"cannot read the logs of {self._shown}'s new pods: "
                                 f"{error}") from None
        new: list[str] = []
        for pod, text in sorted(logs.items()):
            lines = text.splitlines()
            read, first = self._seen.get(pod, (0, ""))
            if len(lines) < read or (read and lines[0] != first):
                read = 0  # another container: the crashed one's log is not this one's
            new += lines[read:]
            self._seen[pod] = (len(lines), lines[0] if lines else "")
        return new
