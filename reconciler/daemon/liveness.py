"""Is the pass loop making progress? What feeds systemd's watchdog and answers /healthz.

A soak, a rollout, a gauntlet or a download can take far longer than ``WatchdogSec``, so
"a pass is running" must not look like a hang, and a hang must not look like a long pass.
Every long step of a pass looks at the pass's stop event between its pieces of work (a
probe of a soak, a read of a download, a poll of a rollout or a gauntlet) and reports
progress through the executor's hooks; the loop itself waits on a timer. So the stop event
handed to a pass is a :class:`ProgressEvent`: each look at it is a sign of life, and a
timed wait on it counts as alive until its timer ends. A thread sends ``WATCHDOG=1`` at
half of ``WatchdogSec`` while the last sign of life is recent; a deadlock (a lock never
released, a read without a timeout) stops the signs, then the pings, and systemd restarts
the daemon.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from reconciler.daemon.sdnotify import Notifier

log = logging.getLogger(__name__)

# Longer than any bounded step that shows no progress on its own (a clone of a large
# repository, a health command's timeout); shorter than anyone would wait for a hung daemon.
TOLERANCE_SECONDS = 30 * 60


class Liveness:
    """The time of the last sign of life (or the end of a timed wait in progress)."""

    def __init__(self, tolerance: float = TOLERANCE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tolerance = tolerance
        self._clock = clock
        self._lock = threading.Lock()
        self._until = clock()

    def beat(self, busy_for: float = 0.0) -> None:
        """A sign of life; ``busy_for``: the caller sleeps on a timer that long."""
        with self._lock:
            self._until = max(self._until, self._clock() + busy_for)

    def age(self) -> float:
        """Seconds since the last sign of life (0 while a timed wait runs)."""
        with self._lock:
            return max(0.0, self._clock() - self._until)

    def alive(self) -> bool:
        return self.age() <= self.tolerance


class ProgressEvent(threading.Event):
    """A pass's stop event whose every look is a sign of life of the pass."""

    def __init__(self, liveness: Liveness) -> None:
        super().__init__()
        self._liveness = liveness

    def is_set(self) -> bool:
        self._liveness.beat()
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self._liveness.beat(timeout or 0.0)  # waiting forever is no sign of life
        woken = super().wait(timeout)
        self._liveness.beat()
        return woken


class Watchdog:
    """Sends WATCHDOG=1 every ``interval`` seconds while ``liveness`` is alive."""

    def __init__(self, notifier: Notifier, liveness: Liveness, interval: float) -> None:
        self._notifier = notifier
        self._liveness = liveness
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _feed(self) -> None:
        silent = False
        while not self._stop.wait(self._interval):
            if self._liveness.alive():
                self._notifier.watchdog()
                silent = False
            elif not silent:
                silent = True
                log.error(f"watchdog: the pass loop shows no progress for "
                          f"{self._liveness.age():.0f}s; no longer telling systemd it is alive")
