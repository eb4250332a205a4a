"""Where an action lands: the same steps (keep the old content, write, restart, check,
flip, undo) on a local directory tree or on a Kubernetes namespace.

The executor drives the steps and journals each one; a place only knows how to carry
them out. Addresses are paths under a local root, or ``configmap/key`` on Kubernetes.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from reconciler.artifacts.fetch import fetch
from reconciler.desired.documents import Desired, Health, Model, Restart, Target
from reconciler.fleet.commands import CommandResult, check_health, command_environment, run_command
from reconciler.fleet.local import LocalFleet
from reconciler.plan.planner import address_of


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

    def pointer_before(self, model: Model, desired: Desired) -> str | None:
        """What the pointer holds now, in the form :meth:`point_back` takes."""

    def flip(self, model: Model, digest: str, revision: str) -> None: ...

    def point_back(self, model: Model, previous: str | None, revision: str) -> None: ...

    def pointed(self, model: Model) -> str | None:
        """The digest the pointer names now (for store garbage collection)."""


class LocalPlace:
    """A directory tree on this host; restarts and health checks are commands."""

    def __init__(self, fleet: LocalFleet, target: Target) -> None:
        self.fleet = fleet
        self.target = target
        self.root = fleet.root_of(target)

    @property
    def where(self) -> str:
        return str(self.root)

    def preserve(self, address: str) -> None:
        self.fleet.preserve(self.target, address)

    def write(self, address: str, content: bytes, mode: int | None, revision: str) -> None:
        self.fleet.write(self.target, address, content, mode)

    def remove(self, address: str, revision: str) -> None:
        self.fleet.remove(self.target, address)

    def _environment(self, kind: str, name: str, revision: str) -> dict[str, str]:
        self.root.mkdir(parents=True, exist_ok=True)
        return command_environment({
            "RECONCILER_TARGET": self.target.name, "RECONCILER_TARGET_ROOT": str(self.root),
            "RECONCILER_REVISION": revision, "RECONCILER_OBJECT": f"{kind}/{name}"})

    def restart_detail(self, restart: Restart) -> dict[str, Any]:
        return {"command": list(restart.command or ())}

    def restart(self, action_kind: str, action_name: str, restart: Restart,
                digest: str | None, revision: str) -> CommandResult:
        assert restart.command is not None
        return run_command(restart.command, self.root, restart.timeout_seconds,
                           self._environment(action_kind, action_name, revision))

    def has_check(self, restart: Restart | None, health: Health | None) -> bool:
        return health is not None

    def check(self, action_kind: str, action_name: str, restart: Restart | None,
              health: Health | None, digest: str | None, revision: str,
              stop: threading.Event) -> CommandResult:
        assert health is not None
        return check_health(health, self.root,
                            self._environment(action_kind, action_name, revision), stop)

    def pointer_before(self, model: Model, desired: Desired) -> str | None:
        path = address_of(model, self.target)
        previous = self.fleet.observe(self.target, [], [path]).pointers[path].link
        live = self.root / path
        if previous is None and live.is_file():
            # A canonical model copied in by hand (cp, not ln -sf): keep it in the store so
            # the flip loses nothing and a rollback can put it back.
            previous = str(fetch(f"file://{live}", None, "file", self.fleet.store,
                                 desired.read_file))
        return previous

    def flip(self, model: Model, digest: str, revision: str) -> None:
        self.fleet.flip(self.target, address_of(model, self.target), digest)

    def point_back(self, model: Model, previous: str | None, revision: str) -> None:
        self.fleet.point(self.target, address_of(model, self.target), previous)

    def pointed(self, model: Model) -> str | None:
        path = address_of(model, self.target)
        return self.fleet.observe(self.target, [], [path]).pointers[path].sha256

