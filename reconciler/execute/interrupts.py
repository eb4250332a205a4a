"""What may end an action under way, and why: a stop, a suspension, a newer revision.

Every wait inside a check, soak, rollout wait, analysis or gauntlet takes a
``threading.Event``. The executor hands them one :class:`ActionInterrupt` per pass,
cleared at the start of each action: it is set by the pass's stop event (SIGTERM, a lost
Lease) or fired by the daemon's other threads for the action under way (a suspension of
its target, a newer commit that changes its desired content). Afterwards the executor asks
:attr:`ActionInterrupt.cause` what the interruption meant:

- ``stop``: the change is undone, the revision is not marked (as before);
- ``suspended`` and ``superseded``: the content in place is left as it is, neither rolled
  back nor marked failed; the journal says its check was ended, and the next pass (at once
  for a newer revision, after ``resume`` for a suspension) finishes or replaces it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import StrEnum

# How often a wait looks at the pass's stop event too: a stop ends any wait within this.
_STOP_POLL_SECONDS = 0.05


class Cause(StrEnum):
    STOP = "stop"
    SUSPENDED = "suspended"
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class Running:
    """The action under way, as the daemon's other threads need to judge it."""

    target: str
    kind: str
    name: str
    desired: str  # the digest being put in place and checked
    revision: str


class ActionInterrupt(threading.Event):
    """Set by the pass's ``stop`` or :meth:`fire`; one per pass, :meth:`reset` per action.

    A look at it is a look at ``stop`` (the daemon's stop event counts each look as a sign
    of life); a wait on it ends within ``_STOP_POLL_SECONDS`` of a stop, at once on a fire.
    """

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop
        self._lock = threading.Lock()
        self._cause: Cause | None = None
        self.why = ""

    def fire(self, cause: Cause, why: str) -> None:
        """End the action under way (from any thread); the first cause is kept."""
        with self._lock:
            if self._cause is None:
                self._cause, self.why = cause, why
        super().set()

    def reset(self) -> None:
        with self._lock:
            self._cause, self.why = None, ""
        super().clear()

    @property
    def cause(self) -> Cause | None:
        if self.stop.is_set():
            return Cause.STOP
        with self._lock:
            return self._cause

    def is_set(self) -> bool:
        return self.stop.is_set() or super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.is_set():
                return True
            step = _STOP_POLL_SECONDS if deadline is None \
                else min(_STOP_POLL_SECONDS, deadline - time.monotonic())
            if step <= 0:
                return False
            if super().wait(step):
                return True
