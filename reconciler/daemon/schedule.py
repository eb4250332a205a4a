"""When the daemon's next pass is due: pure arithmetic on how the last one ended."""

from __future__ import annotations

from reconciler.vocabulary import PassResult


def next_delay(result: PassResult, *, resync: float, poll: float | None,
               retry_in: float | None, backoff: float) -> float:
    """Seconds until the next pass.

    ``resync``: the full-pass period; ``poll``: the interval for a remote repository (None
    for a local one, whose refs are watched); ``retry_in``: when the earliest waiting
    action may run (a soak's end, a window's opening); ``backoff``: the next backoff
    delay, used after a transient fault.
    """
    if result is PassResult.TRANSIENT:
        return backoff
    if result is PassResult.CHANGED:
        return 0.0  # what upstream targets just became may release downstream ones
    every = resync if poll is None else min(resync, poll)
    if retry_in is not None:
        return min(every, retry_in + 0.5)  # a little after, so the planner sees it due
    return every
