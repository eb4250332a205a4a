"""The watchdog is fed while the pass loop shows progress, and only then."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from reconciler.daemon.liveness import Liveness, ProgressEvent, Watchdog
from reconciler.daemon.sdnotify import Notifier


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_looks_at_the_stop_event_and_timed_waits_are_progress() -> None:
    clock = Clock()
    liveness = Liveness(tolerance=60, clock=clock)
    stop = ProgressEvent(liveness)
    clock.now += 50
    assert liveness.alive() and liveness.age() == 50
    stop.is_set()  # a soak's probe, a download's read, a step boundary
    assert liveness.age() == 0
    clock.now += 61
    assert not liveness.alive(), "no look at the stop event for over the tolerance: hung"
    liveness.beat(busy_for=600)  # the loop sleeps on a timer until the next pass
    clock.now += 599
    assert liveness.alive() and liveness.age() == 0


def test_a_deadlocked_loop_starves_the_watchdog_and_a_busy_one_feeds_it(
        tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(0.05)
    liveness = Liveness(tolerance=0.3)
    stop = ProgressEvent(liveness)
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"})
    assert notifier.watchdog_interval == 0.05
    watchdog = Watchdog(notifier, liveness, notifier.watchdog_interval)
    watchdog.start()

    def pings(seconds: float, busy: bool) -> int:
        count, until = 0, time.monotonic() + seconds
        while time.monotonic() < until:
            if busy:
                stop.wait(0.02)  # a soak polling its probe
            with contextlib.suppress(TimeoutError):
                count += receiver.recv(64) == b"WATCHDOG=1"
        return count

    try:
        assert pings(1.0, busy=True) >= 10, "a long step that polls is progress"
        deadlock = threading.Lock()
        deadlock.acquire()
        assert not deadlock.acquire(timeout=0.5)  # a hang: nothing looks at the stop event
        pings(0.2, busy=False)  # drain what was sent before the tolerance ran out
        assert pings(0.6, busy=False) == 0, "a hung loop must not be reported alive"
        assert pings(0.5, busy=True) >= 3, "progress again: fed again"
    finally:
        watchdog.stop()
        receiver.close()
