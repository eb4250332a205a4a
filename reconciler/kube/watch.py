"""Self-heal: a watch on the ConfigMaps we manage wakes the daemon when someone else
changes one, so drift is restored in about a second instead of at the next resync.

Our own applies carry the digest of the keys we manage in an annotation; an event whose
data no longer matches it (``kubectl edit``), or a deletion, is someone else's doing. A
watch that ends (the server's timeout) or breaks is started again from a fresh LIST, after
a backoff when the API fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from reconciler.desired.documents import Target
from reconciler.errors import ReconcilerError
from reconciler.kube.api import FIELD_MANAGER, Clusters
from reconciler.kube.fleet import (
    MANAGED_BY_LABEL,
    TARGET_LABEL,
    changed_by_someone_else,
)

WATCH_SECONDS = 300
MAX_DELAY_SECONDS = 60.0


class DriftWatch:
    def __init__(self, clusters: Clusters, on_drift: Callable[[str], None]) -> None:
        self._clusters = clusters
        self._on_drift = on_drift
        self._running: dict[tuple[str | None, str, str], threading.Event] = {}

    def follow(self, targets: Iterable[Target]) -> None:
        """Watch exactly these targets: start what is new, stop what is gone."""
        wanted = {(t.kube_context, t.kube_namespace, t.name): t for t in targets
                  if t.kube_namespace is not None}
        for key in set(self._running) - wanted.keys():
            self._running.pop(key).set()
        for key, target in wanted.items():
            if key not in self._running:
                stopped = self._running[key] = threading.Event()
                threading.Thread(target=self._watch, args=(target, stopped),
                                 name=f"watch-{target.name}", daemon=True).start()

    def stop(self) -> None:
        self.follow(())

    def _watch(self, target: Target, stopped: threading.Event) -> None:
        cluster = self._clusters.get(target.kube_context)
        namespace = target.kube_namespace
        assert namespace is not None
        selector = f"{MANAGED_BY_LABEL}={FIELD_MANAGER},{TARGET_LABEL}={target.name}"
        delay = 1.0
        while not stopped.is_set():
            try:
                core = cluster.core()
                listed = cluster.call("list", "configmaps", namespace,
                                      core.list_namespaced_config_map, namespace,
                                      label_selector=selector)
                for event in cluster.watch(
                        "watch", "configmaps", namespace, core.list_namespaced_config_map,
                        namespace, label_selector=selector, seconds=WATCH_SECONDS,
                        resource_version=listed.metadata.resource_version):
                    if stopped.is_set():
                        return
                    item = event["object"]
                    if event["type"] == "DELETED" or (event["type"] == "MODIFIED" and
                                                      changed_by_someone_else(item, target)):
                        self._on_drift(f"ConfigMap {item.metadata.name} on {target.name} "
                                       f"{event['type'].lower()} by someone else")
                delay = 1.0
            except ReconcilerError:
                stopped.wait(delay)  # an outage, or a resourceVersion too old: list again
                delay = min(delay * 2, MAX_DELAY_SECONDS)
