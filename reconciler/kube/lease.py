"""Leader election with a coordination.k8s.io/v1 Lease, as client-go does it.

A daemon acts only while it holds the Lease. It renews it every third of the lease
duration; another daemon takes over only after the record has stayed unchanged for
``leaseDurationSeconds`` *on its own monotonic clock*, counted from the moment it first saw
the record as it is now (client-go's ``observedTime``). The holder's ``renewTime`` is
written for people and tools but never compared with the local wall clock: a standby
whose clock runs ahead must not take a Lease renewed a moment ago. Every write carries the
resourceVersion just read, so two standbys racing for an expired Lease cannot both win.
On SIGTERM the holder releases the Lease (empty holder) so that a standby takes over at
once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.kube.api import MERGE, Cluster, Conflict, NotFound
from reconciler.settings import LeaderElection


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Holder:
    identity: str | None
    expires: datetime | None

    def describe(self) -> str:
        if not self.identity:
            return "nobody"
        until = f" until {self.expires:%H:%M:%S}Z" if self.expires else ""
        return f"{self.identity}{until}"


@dataclass(frozen=True, slots=True)
class _Observed:
    """A Lease record as last seen, and when (on the monotonic clock) it was first seen so."""

    record: tuple[Any, ...]
    since: float


def _wall_now() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    """``clock``: monotonic seconds, the only time expiry is measured in. ``wall_clock``:
    what ``renewTime`` and ``acquireTime`` say (informational). Both are parameters so
    that tests can skew them."""

    def __init__(self, cluster: Cluster, settings: LeaderElection,
                 identity: str | None = None, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = _wall_now) -> None:
        self._cluster = cluster
        self._settings = settings
        self.identity = identity or default_identity()
        self.holder = Holder(None, None)
        self._clock = clock
        self._wall_clock = wall_clock
        self._observed: _Observed | None = None

    def _observe(self, spec: Any, duration: float) -> float:
        """Seconds until the record expires by our clock: a record that changed since we
        last looked starts its full duration now."""
        record = (spec.holder_identity, spec.renew_time, spec.acquire_time,
                  spec.lease_duration_seconds, spec.lease_transitions)
        now = self._clock()
        if self._observed is None or self._observed.record != record:
            self._observed = _Observed(record, now)
        return self._observed.since + duration - now

    def holder_description(self) -> str:
        return self.holder.describe()

    @property
    def shown(self) -> str:
        return f"Lease {self._settings.namespace}/{self._settings.name}"

    def _read(self) -> Any | None:
        api = self._cluster.coordination()
        try:
            return self._cluster.call("get", "leases", self._settings.namespace,
                                      api.read_namespaced_lease, self._settings.name,
                                      self._settings.namespace)
        except NotFound:
            return None

    def try_acquire(self) -> bool:
        """Acquire or renew; False while another holder's lease is current (or we lost a
        race for it). API faults propagate: the caller must not act on a fault."""
        now = self._wall_clock()
        lease = self._read()
        duration = int(self._settings.lease_seconds)
        mine = {"holderIdentity": self.identity, "leaseDurationSeconds": duration,
                "renewTime": _micro_time(now)}
        api = self._cluster.coordination()
        namespace, name = self._settings.namespace, self._settings.name
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {**mine, "acquireTime": _micro_time(now), "leaseTransitions": 0}}
            try:
                self._cluster.call("create", "leases", namespace,
                                   api.create_namespaced_lease, namespace, body)
            except Conflict:
                return False  # another daemon created it first
            self.holder = Holder(self.identity, now + timedelta(seconds=duration))
            return True
        spec = lease.spec
        holder = spec.holder_identity or None
        remaining = self._observe(spec, float(spec.lease_duration_seconds or duration))
        self.holder = Holder(holder, now + timedelta(seconds=remaining))  # shown, not compared
        if holder and holder != self.identity and remaining > 0:
            return False
        patch: dict[str, Any] = {"metadata": {"resourceVersion":
                                              lease.metadata.resource_version},
                                 "spec": mine}
        if holder != self.identity:
            patch["spec"]["acquireTime"] = _micro_time(now)
            patch["spec"]["leaseTransitions"] = (spec.lease_transitions or 0) + 1
        try:
            self._cluster.call("patch", "leases", namespace, api.patch_namespaced_lease, name,
                               namespace, patch, _content_type=MERGE)
        except Conflict:
            return False  # renewed or taken by someone else between our read and write
        self.holder = Holder(self.identity, now + timedelta(seconds=duration))
        return True

    def release(self) -> None:
        """Give the Lease up if we still hold it, so a standby need not wait for expiry."""
        lease = self._read()
        if lease is None or lease.spec.holder_identity != self.identity:
            return
        api = self._cluster.coordination()
        patch = {"metadata": {"resourceVersion": lease.metadata.resource_version},
                 "spec": {"holderIdentity": None, "renewTime": None}}
        with contextlib.suppress(Conflict):  # renewed or taken meanwhile: not ours to release
            self._cluster.call("patch", "leases", self._settings.namespace,
                               api.patch_namespaced_lease, self._settings.name,
                               self._settings.namespace, patch, _content_type=MERGE)
        self.holder = Holder(None, None)
