"""The seams between the pass and the adapters: protocols defined below both.

- :class:`Fleet` observes the targets of one type and gives a :class:`Place` per target.
- :class:`Place` carries out the executor's steps on one target (keep, write, restart,
  check, flip, undo); ``local/`` and ``kube/`` implement both, and a third kind of target
  (an SSH host, a Slurm cluster) is one more package plus a line in the registry
  (``app.FLEET_TYPES``).
- :class:`ContentStore` is what places and artifact fetching need of the store
  (``store.Store`` implements it): they receive it, they never build one.

The executor drives the steps and journals each one; a place only knows how to carry them
out. Addresses are paths under a local root, or ``configmap/key`` on Kubernetes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from reconciler.desired.documents import Desired, Health, Model, Restart, Target
from reconciler.plan.observed import ObservedTarget


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A restart or a health check: did it succeed, why (for status), what it printed."""

    ok: bool
    detail: str
    output_tail: str = ""


class LogUnavailable(Exception):
    """A log a check reads cannot be read (missing, not a regular file, outside the roots
    allowed, an API fault): that measurement has no data."""


class LogReader(Protocol):
    def lines(self) -> list[str]:
        """The complete lines written since the previous call (the first call: since the
        reader was made), bounded. Raises :class:`LogUnavailable`."""


class Workload(Protocol):
    """What an analysis may look at of one object's workload on one target, from just
    before a change (see analysis/). Made by :meth:`Place.workload`."""

    def log(self, path: str | None, container: str | None) -> LogReader:
        """A reader of the workload's log from now on: a file on a host, the new pods' logs
        on Kubernetes. Raises :class:`LogUnavailable`."""

    def command(self, argv: tuple[str, ...], timeout: float) -> CommandResult:
        """A command check, run as the health command would be."""


class ContentStore(Protocol):
    def location(self, digest: str) -> Path: ...

    def named(self, link: str) -> str | None: ...

    def verified(self, digest: str) -> Path | None: ...

    def require(self, digest: str) -> Path: ...

    def read(self, digest: str) -> bytes: ...

    def put(self, content: bytes) -> str: ...

    def put_file(self, source: Path) -> str: ...

    def staging(self, name: str, *, resumable: bool = False) -> Path: ...

    def publish(self, staged: Path, digest: str, *, proven: bool = False) -> Path: ...

    def remove(self, digest: str) -> None: ...


class Place(Protocol):
    target: Target

    @property
    def where(self) -> str:
        """For messages: the root folder, or the cluster and namespace."""

    def preserve(self, address: str) -> None:
        """Keep the live content in the store, so that a rollback can put it back."""

    def write(self, address: str, content: bytes, mode: int | None, revision: str) -> None: ...

    def remove(self, address: str, revision: str) -> None: ...

    def restart_detail(self, restart: Restart) -> dict[str, Any]: ...

    def restart(self, action_kind: str, action_name: str, restart: Restart,
                digest: str | None, revision: str) -> CommandResult: ...

    def has_check(self, restart: Restart | None, health: Health | None) -> bool: ...

    def check(self, action_kind: str, action_name: str, restart: Restart | None,
              health: Health | None, digest: str | None, revision: str,
              stop: threading.Event) -> CommandResult: ...

    def workload(self, action_kind: str, action_name: str, restart: Restart | None,
                 digest: str, revision: str) -> Workload:
        """What an analysis of the change to ``digest`` looks at (its logs, its commands)."""

    def pointer_before(self, model: Model, desired: Desired) -> str | None:
        """What the pointer holds now, in the form :meth:`point_back` takes."""

    def flip(self, model: Model, digest: str, revision: str) -> None: ...

    def point_back(self, model: Model, previous: str | None, revision: str) -> None: ...

    def pointed(self, model: Model) -> str | None:
        """The digest the pointer names now (for store garbage collection)."""


class Fleet(Protocol):
    """Every target of one type: observed in one go, acted on through a place each."""

    def observe(self, target: Target, files: Iterable[str],
                pointers: Iterable[str]) -> ObservedTarget: ...

    def read(self, target: Target, address: str) -> bytes | None:
        """The live content at an address, for diffs; None when there is none."""

    def place(self, target: Target) -> Place: ...

    def finish_observing(self) -> None:
        """Persist what observing learnt (the digest cache), once per pass."""
