"""What happened to an object, for the people and systems that listen: notifications
(webhooks, Slack, Alertmanager) and commit statuses on the forge.

The executor and the daemon publish; sinks subscribe. A sink must never hold up a pass:
it queues and delivers on its own thread (retries, backoff and rate limits are its
business). A sink that raises is logged and skipped; it never fails the pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """The events a listener can filter on (``reconciler.yaml`` names them so)."""

    PROGRESSING = "progressing"  # a change is in place on a target and being checked
    APPLIED = "applied"  # a Strategy or Config change is healthy on a target
    PROMOTED = "promoted"  # a Model pointer names a new digest and it is healthy
    REJECTED = "rejected"  # a gate rejected a model (or was inconclusive and held)
    ROLLED_BACK = "rolled-back"  # a change failed its checks and was undone
    STALLED = "stalled"  # needs a new commit or a person
    DRIFT_HEALED = "drift-healed"  # live state was put back to the declared state
    BUDGET_EXHAUSTED = "budget-exhausted"  # a Budget refused an action
    SUSPENDED = "suspended"  # a person stopped the line on a target
    RESUMED = "resumed"
    SUPERSEDED = "superseded"  # a newer revision ended a check of an older one


@dataclass(frozen=True, slots=True)
class Event:
    """One event. ``kind``/``name`` are empty for events about a whole target (suspended,
    resumed). ``values``: the measured values behind a decision (check name -> value)."""

    type: EventType
    target: str
    revision: str | None
    kind: str = ""
    name: str = ""
    digest: str | None = None
    reason: str | None = None
    message: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    @property
    def subject(self) -> str:
        return f"{self.kind}/{self.name} on {self.target}" if self.kind else self.target


log = logging.getLogger(__name__)

Sink = Callable[[Event], None]


class Subscribers:
    """Fan-out from publishers to sinks; thread-safe, never raises into the publisher."""

    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()

    def add(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def publish(self, event: Event) -> None:
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink(event)
            except Exception as error:  # a listener's defect never fails a pass
                log.error(f"event sink failed on {event.type} {event.subject}: {error}")
