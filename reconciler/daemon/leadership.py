"""Holding a Lease in the background while the daemon works (kube/lease.py does the API).

One thread acquires and renews every third of the lease duration. The daemon acts only
while ``leading`` is true. When a renewal is refused (another holder) or fails for longer
than the renew deadline (two thirds of the lease: we must stop before another daemon may
start), leadership is lost and ``on_lost`` stops the pass in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from reconciler.app import Connections
from reconciler.errors import ReconcilerError
from reconciler.settings import Settings

log = logging.getLogger(__name__)


class Elector(Protocol):
    identity: str

    @property
    def shown(self) -> str: ...

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...

    def holder_description(self) -> str: ...


class Leadership:
    def __init__(self, elector: Elector, lease_seconds: float, stop: threading.Event, *,
                 on_gained: Callable[[], None], on_lost: Callable[[str], None]) -> None:
        self.elector = elector
        self._lease_seconds = lease_seconds
        self._stop = stop
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._leading = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self.last_error: str | None = None

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def describe(self) -> str:
        if self.leading:
            return f"leading: {self.elector.shown} held by {self.elector.identity}"
        why = f" ({self.last_error})" if self.last_error else ""
        return f"standby: {self.elector.shown} held by " \
               f"{self.elector.holder_description()}{why}"

    def start(self) -> None:
        self._attempt(time.monotonic())
        self._thread.start()

    def wait_leading(self) -> bool:
        """For a one-shot command: a Lease seen held expires only after it stayed unchanged
        for its whole duration on our clock (kube/lease.py), so wait that long (plus one
        retry period) before saying another daemon acts. True once it is ours."""
        return self._leading.wait(self._lease_seconds * 4 / 3 + 1)

    def _attempt(self, last_renewed: float) -> float:
        now = time.monotonic()
        try:
            held = self.elector.try_acquire()
            self.last_error = None
        except Exception as error:
            reason = error.reason if isinstance(error, ReconcilerError) else type(error).__name__
            self.last_error = f"{reason}: {error}"
            if self.leading and now - last_renewed > self._lease_seconds * 2 / 3:
                self._lose(f"could not renew {self.elector.shown}: {error}")
            return last_renewed
        if held and not self.leading:
            self._leading.set()
            self._on_gained()
        elif not held and self.leading:
            self._lose(f"{self.elector.shown} was taken by "
                       f"{self.elector.holder_description()}")
        return now if held else last_renewed

    def _lose(self, why: str) -> None:
        self._leading.clear()
        self._on_lost(why)

    def _run(self) -> None:
        last_renewed = time.monotonic()
        while not self._stop.wait(self._lease_seconds / 3):
            last_renewed = self._attempt(last_renewed)

    def stop(self) -> None:
        """After the loop ended: release the Lease so a standby takes over at once."""
        self._thread.join(timeout=self._lease_seconds)
        if self.leading:
            self._leading.clear()
            try:
                self.elector.release()
            except ReconcilerError as error:
                log.warning(f"could not release {self.elector.shown}: {error}")


def leadership(settings: Settings, connections: Connections, stop: threading.Event, *,
               on_gained: Callable[[], None],
               on_lost: Callable[[str], None]) -> Leadership | None:
    """The Lease of ``leaderElection``, held in the background; None without one."""
    election = settings.leader_election
    if election is None:
        return None
    from reconciler.kube.lease import LeaseElector  # only with a Lease
    return Leadership(LeaseElector(connections().get(election.context), election),
                      election.lease_seconds, stop, on_gained=on_gained, on_lost=on_lost)
