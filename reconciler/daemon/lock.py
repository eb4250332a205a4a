"""One daemon acts on a fleet at a time: an exclusive flock on the fleet root folder itself
(and on every allowed root), not on a file inside it.

- Keyed to the fleet, not to a state dir or a path: two daemons with different state dirs
  (or reaching the folder through different paths) lock the same inode, and the second is
  refused.
- Out of reach: there is no lock file to ``rm`` and none a repository could deliver over
  (a root of ``"."`` once replaced ``.reconciler.lock`` by a delivered file). A folder moved
  or replaced as a whole is caught: right after the lock is taken, and before every pass,
  the path must still be the locked inode, or :class:`FleetLockLost` stops the daemon.
- The lock dies with its process (kill -9 included): no stale lock to clean up. The
  descriptor is close-on-exec, so services a restart command starts never inherit it.

A refused second reconciler names the holder from ``/proc/locks`` (pid and command line).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from reconciler.errors import StalledError


class FleetLocked(StalledError):
    reason = "FleetLocked"


class FleetLockLost(StalledError):
    reason = "FleetLockLost"


class FleetLock:
    def __init__(self, fleet_root: Path, purpose: str,
                 allowed_roots: Sequence[Path] = ()) -> None:
        self.paths = list(dict.fromkeys([fleet_root, *allowed_roots]))
        self.purpose = purpose
        self._held: list[tuple[Path, int]] = []

    def acquire(self) -> None:
        """Take the lock on every folder or raise FleetLocked naming the holder."""
        try:
            for path in self.paths:
                self._held.append((path, _take(path)))
        except BaseException:
            self.release()
            raise

    def check(self) -> None:
        """FleetLockLost when a locked folder is no longer at its path: another reconciler
        could lock what is there now, so this one must not act on it."""
        for path, descriptor in self._held:
            if not _same(descriptor, path):
                raise FleetLockLost(
                    f"{path} is no longer the folder this reconciler ({self.purpose}) locked: "
                    "it was moved, removed or replaced; stopping so that two reconcilers "
                    "never act on one fleet. Put the folder back, or start reconciler again "
                    "to lock the new one")

    def release(self) -> None:
        while self._held:
            os.close(self._held.pop()[1])  # closing drops the flock


def _take(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(os.fstat(descriptor))
        os.close(descriptor)
        raise FleetLocked(f"fleet {path} is locked by another reconciler ({holder}); it "
                          "alone acts on this fleet") from None
    if not _same(descriptor, path):
        os.close(descriptor)
        raise FleetLockLost(f"{path} was replaced while it was being locked; try again")
    return descriptor


def _same(descriptor: int, path: Path) -> bool:
    held = os.fstat(descriptor)
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _holder(locked: os.stat_result, table: str = "/proc/locks") -> str:
    """'pid N: its command line' of the process holding a flock on this inode."""
    wanted = (os.major(locked.st_dev), os.minor(locked.st_dev), locked.st_ino)
    try:
        with open(table) as lines:
            for line in lines:
                fields = line.split()
                if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
                    continue
                major, minor, inode = fields[5].split(":")
                if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                    return f"pid {fields[4]}: {_command(fields[4])}"
    except (OSError, ValueError):
        pass
    return "holder unknown"


def _command(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            words = stream.read(4096).split(b"\0")
    except OSError:
        return "command unknown"
    return " ".join(word.decode(errors="replace") for word in words if word)[:160]
