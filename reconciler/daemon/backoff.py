"""Exponential backoff with jitter, capped: for transient faults (git, network, API)."""

from __future__ import annotations

import random

_MAX_EXPONENT = 64  # 2**64 seconds dwarfs any cap


class Backoff:
    def __init__(self, base: float = 1.0, cap: float = 300.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        self.base, self.cap, self.factor = base, cap, factor
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The wait after one more failure: between half and all of the capped exponential,
        so that daemons that failed together do not retry together."""
        # The exponent stops growing once the cap is reached: a fault that lasts for days
        # must not overflow the float (that ended the daemon after ~1,000 failures).
        ceiling = min(self.cap, self.base * self.factor ** min(self.failures, _MAX_EXPONENT))
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.failures = 0
