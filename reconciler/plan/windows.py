"""Maintenance windows: when disruptive actions (restarts, pointer flips) may run. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from reconciler.desired.documents import Window

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _open_at(window: Window, local: datetime) -> bool:
    start, end = _minutes(window.start), _minutes(window.end)
    now = local.hour * 60 + local.minute
    days = window.days or _DAYS
    if start <= end:
        return _DAYS[local.weekday()] in days and start <= now < end
    # Across midnight (22:00-04:00): the part after midnight belongs to the previous day.
    if now >= start:
        return _DAYS[local.weekday()] in days
    return now < end and _DAYS[(local.weekday() - 1) % 7] in days


def next_opening(window: Window, now: float) -> float | None:
    """None when the window is open at ``now``; else the epoch second it next opens."""
    zone = ZoneInfo(window.time_zone)
    local = datetime.fromtimestamp(now, zone)
    if _open_at(window, local):
        return None
    # A window opens at its start time on a listed day: one of the next eight is it.
    hour, minute = divmod(_minutes(window.start), 60)
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if candidate.timestamp() > now and _open_at(window, candidate):
            return candidate.timestamp()
    raise ValueError(f"window {window} never opens")
