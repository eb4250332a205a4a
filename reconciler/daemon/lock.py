"""One daemon acts on a fleet at a time: an exclusive flock on a file in the fleet root.

The lock dies with its process (kill -9 included), so there is no stale lock to clean up.
The holder writes who it is, so a refused second daemon can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from reconciler.errors import StalledError

LOCK_NAME = ".reconciler.lock"


class FleetLocked(StalledError):
    reason = "FleetLocked"


class FleetLock:
    def __init__(self, fleet_root: Path, purpose: str) -> None:
        self.path = fleet_root / LOCK_NAME
        self._purpose = purpose
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise FleetLocked naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 4096).decode(errors="replace")
            os.close(descriptor)
            raise FleetLocked(f"fleet {self.path.parent} is locked by another reconciler "
                              f"({_describe(holder)}); it alone acts on this fleet") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                         "purpose": self._purpose,
                                         "since": time.time()}).encode())
        os.fsync(descriptor)
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"{info['purpose']}, pid {info['pid']} on {info['host']}, since {started}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
