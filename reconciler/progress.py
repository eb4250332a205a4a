"""Progress of long work (hashing, downloads, gauntlets) for a person at a terminal.

On a terminal: one line rewritten in place (``\\r`` and erase-to-end), at most ten times a
second, with the rate and the time left; the last state stays on screen when the work ends.
Anywhere else (a pipe, a file, a CI log, TERM=dumb): nothing, so that output stays what
scripts parse and logs do not fill with carriage returns. The daemon reports the same work in its
systemd STATUS line instead.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

_MIN_INTERVAL = 0.1  # seconds between redraws: a terminal cannot show more anyway
_ERASE = "\x1b[K"


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def format_eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _is_terminal(stream: TextIO) -> bool:
    """A terminal that can rewrite a line: TERM=dumb (an editor's shell buffer) shows the
    erase sequence as text."""
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except ValueError:
        return False


class ByteProgress:
    """A ``(done, total)`` callback (``digests.Progress``) drawing bytes, %, rate and ETA."""

    def __init__(self, label: str, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, *,
                 from_first_call: bool = False) -> None:
        """``from_first_call``: made when the first bytes have already arrived (a hook
        that hears of a download only through its callbacks): the rate counts from that
        first call, not from an unknown start."""
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._started = clock()
        self._counted_from = 0  # bytes done when the clock started
        self._from_first_call = from_first_call
        self._rate_drawn = False
        self._drawn_at: float | None = None
        self._last: tuple[int, int] = (0, 0)
        self.enabled = _is_terminal(self._stream)

    def line(self, done: int, total: int, now: float) -> str:
        """What the line says after ``done`` of ``total`` bytes (total 0: unknown)."""
        elapsed = max(now - self._started, 1e-6)
        counted = done - self._counted_from
        rate = counted / elapsed
        text = f"{self._label}: {self._amount(done)}"
        if total:
            text += f" of {self._total(total)} ({100 * done / total:.0f}%)"
        if counted <= 0 and self._counted_from:  # one sample: no rate to tell yet
            return text
        text += f", {self._rate(rate)}"
        if total and done < total and rate > 0:
            text += f", ETA {self._eta(format_eta((total - done) / rate))}"
        elif total and done >= total:
            text += f", done in {format_eta(elapsed)}"
        return text

    def _amount(self, count: float) -> str:
        return format_bytes(count)

    def _total(self, count: float) -> str:
        return format_bytes(count)

    def _rate(self, per_second: float) -> str:
        return f"{format_bytes(per_second)}/s"

    def _eta(self, left: str) -> str:
        return left

    def __call__(self, done: int, total: int) -> None:
        if self._from_first_call:
            self._from_first_call = False
            self._started, self._counted_from = self._clock(), done
        self._last = (done, total)
        if not self.enabled:
            return
        now = self._clock()
        # The first line that can tell a rate is drawn at once, however soon: a short
        # download would otherwise show none before its end.
        rate_shown = self._rate_drawn or done == self._counted_from
        if self._drawn_at is not None and now - self._drawn_at < _MIN_INTERVAL and rate_shown:
            return
        self._rate_drawn = self._rate_drawn or done > self._counted_from
        self._draw(now)

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self._stream.write(f"\r{self.line(*self._last, now)}{_ERASE}")
        self._stream.flush()

    def finish(self) -> None:
        """Draw the final state and end the line (only if anything was drawn since the
        last ``finish``: calling it twice ends the line once)."""
        if self.enabled and self._drawn_at is not None:
            self._draw(self._clock())
            self._stream.write("\n")
            self._stream.flush()
            self._drawn_at = None


class GameProgress(ByteProgress):
    """Games played of the most a gate may play: the SPRT usually stops far earlier, so
    the total and the time left are ceilings, and say so."""

    def _amount(self, count: float) -> str:
        return f"{count:.0f}"

    def _total(self, count: float) -> str:
        return f"at most {count:.0f} games"

    def _rate(self, per_second: float) -> str:
        return f"{per_second:.1f} games/s"

    def _eta(self, left: str) -> str:
        return f"at most {left}"


class StatusLine:
    """A ``(text)`` callback for work measured in steps, not bytes (a gauntlet's games, a
    pass's actions): the newest message and the time spent, rewritten in place."""

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._started = clock()
        self._drawn = False
        self.enabled = _is_terminal(self._stream)

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        elapsed = format_eta(self._clock() - self._started)
        self._stream.write(f"\r{text} ({elapsed}){_ERASE}")
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self.enabled and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
