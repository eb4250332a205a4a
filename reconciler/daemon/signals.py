"""Signals handled on a thread of their own, never inside a Python signal handler.

A Python handler runs in the main thread between two bytecodes, which may be inside
``threading.Event.wait`` while it holds the event's lock: a handler that calls ``set()``
on that event then waits for a lock its own thread holds, and the daemon hangs, deaf even
to SIGTERM (seen as a reload that never finished). So the C-level handler only writes the
signal's number to a pipe (``signal.set_wakeup_fd``, async-signal-safe); a relay thread
reads it and calls the daemon's callbacks in ordinary thread context.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Mapping


def relay_signals(callbacks: Mapping[signal.Signals, Callable[[], None]]) -> None:
    """From the main thread: route these signals to ``callbacks`` on a relay thread."""
    by_number = {int(signum): callback for signum, callback in callbacks.items()}
    read, write = os.pipe()
    os.set_blocking(write, False)  # a burst of signals must never block the handler
    for signum in callbacks:
        signal.signal(signum, _ignore_in_python)  # the wakeup fd carries them
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def relay() -> None:
        while True:
            with contextlib.suppress(InterruptedError):
                for number in os.read(read, 64):
                    callback = by_number.get(number)
                    if callback is not None:
                        callback()

    threading.Thread(target=relay, name="signals", daemon=True).start()


def _ignore_in_python(signum: int, frame: object) -> None:
    """Installed so the default action (terminate) does not apply; the relay acts."""
