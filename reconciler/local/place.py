"""A local target as a place for the executor's steps (see places.py): files written
atomically under the target's root, restarts and health checks as commands, pointers as
symlinks into the store."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from reconciler.desired.documents import Desired, Health, Model, Restart, Target
from reconciler.local.commands import check_health, run_command
from reconciler.local.logs import FileLog, opener
from reconciler.places import CommandResult, LogReader
from reconciler.plan.planner import address_of
from reconciler.processes import Identity, command_environment, identity

if TYPE_CHECKING:
    from reconciler.local.fleet import LocalFleet


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
        self._ensure_root()
        self.fleet.write(self.target, address, content, mode)

    def remove(self, address: str, revision: str) -> None:
        self.fleet.remove(self.target, address)

    def _ensure_root(self) -> None:
        """Made on first use, beneath its base (a link where it belongs is replaced); with a
        ``runAs`` user, shared with it: the daemon delivers, the services it restarts keep
        their own files beside (setgid keeps the group)."""
        self.fleet.ensure_root(self.target, self._group)

    def _group(self) -> int | None:
        user = self._user()
        return None if user is None else user.gid

    def _environment(self, kind: str, name: str, revision: str,
                     user: Identity | None) -> dict[str, str]:
        self._ensure_root()
        return command_environment({
            "RECONCILER_TARGET": self.target.name, "RECONCILER_TARGET_ROOT": str(self.root),
            "RECONCILER_REVISION": revision, "RECONCILER_OBJECT": f"{kind}/{name}"}, user)

    def _user(self) -> Identity | None:
        """Who the target's commands run as: its ``runAs``, else the settings' default,
        else the daemon's own user. An unknown user fails the step, naming it."""
        name = self.target.run_as or self.fleet.run_as
        return identity(name) if name else None

    def restart_detail(self, restart: Restart) -> dict[str, Any]:
        return {"command": list(restart.command or ())}

    def restart(self, action_kind: str, action_name: str, restart: Restart,
                digest: str | None, revision: str) -> CommandResult:
        assert restart.command is not None
        try:
            user = self._user()
        except LookupError as error:
            return CommandResult(False, str(error))
        return run_command(restart.command, self.root, restart.timeout_seconds,
                           self._environment(action_kind, action_name, revision, user), user)

    def has_check(self, restart: Restart | None, health: Health | None) -> bool:
        return health is not None

    def check(self, action_kind: str, action_name: str, restart: Restart | None,
              health: Health | None, digest: str | None, revision: str,
              stop: threading.Event) -> CommandResult:
        assert health is not None
        try:
            user = self._user()
        except LookupError as error:
            return CommandResult(False, str(error))
        return check_health(health, self.root,
                            self._environment(action_kind, action_name, revision, user), stop,
                            user)

    def workload(self, action_kind: str, action_name: str, restart: Restart | None,
                 digest: str, revision: str) -> LocalWorkload:
        return LocalWorkload(self, action_kind, action_name, revision)

    def run_as_check(self, kind: str, name: str, revision: str, argv: tuple[str, ...],
                     timeout: float) -> CommandResult:
        """A command run as a health command is: in the root, as the fleet's user."""
        try:
            user = self._user()
        except LookupError as error:
            return CommandResult(False, str(error))
        return run_command(argv, self.root, timeout,
                           self._environment(kind, name, revision, user), user)

    def pointer_before(self, model: Model, desired: Desired) -> str | None:
        path = address_of(model, self.target)
        previous = self.fleet.pointer(self.target, path).link
        if previous is None:
            # A canonical model copied in by hand (cp, not ln -sf): keep it in the store so
            # the flip loses nothing and a rollback can put it back. Only a regular file
            # beneath the root counts; a link on the way is drift, never content.
            kept = self.fleet.preserve(self.target, path)
            if kept is not None:
                previous = str(self.fleet.store.location(kept))
        return previous

    def flip(self, model: Model, digest: str, revision: str) -> None:
        self.fleet.flip(self.target, address_of(model, self.target), digest)

    def point_back(self, model: Model, previous: str | None, revision: str) -> None:
        self.fleet.point(self.target, address_of(model, self.target), previous)

    def pointed(self, model: Model) -> str | None:
        return self.fleet.pointer(self.target, address_of(model, self.target)).sha256



class LocalWorkload:
    """What an analysis looks at on a host: log files, and commands run as health commands
    are (in the root, as the fleet's user, with the same environment)."""

    def __init__(self, place: LocalPlace, kind: str, name: str, revision: str) -> None:
        self._place = place
        self._kind, self._name, self._revision = kind, name, revision

    def log(self, path: str | None, container: str | None) -> LogReader:
        assert path is not None  # validation requires a path on a local target
        fleet, target = self._place.fleet, self._place.target
        return FileLog(opener(path, lambda relative: fleet.open_log(target, relative),
                              fleet.log_roots), path)

    def command(self, argv: tuple[str, ...], timeout: float) -> CommandResult:
        return self._place.run_as_check(self._kind, self._name, self._revision, argv, timeout)
