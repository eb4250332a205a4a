"""Durations as written in documents and settings: ``90s``, ``30m``, ``2h``, ``1h30m``."""

from __future__ import annotations

import re

# Units in descending order, each at most once, at least one present.
DURATION_PATTERN = r"^(?=[0-9])(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m(?!s))?(?:[0-9]+s)?(?:[0-9]+ms)?$"
_DURATION = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+)(ms|d|h|m|s)")
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError names the accepted form."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration such as '90s', '30m', '2h' or '1h30m'")
    return sum(int(amount) * _SECONDS[unit] for amount, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest form ``parse_duration`` reads back, e.g. ``1h30m``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    remaining = round(seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = int(_SECONDS[unit])
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts)
