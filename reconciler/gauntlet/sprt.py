"""Sequential early stopping on pair scores, in the style of fishtest's pentanomial GSPRT.

Games come in colour-swapped pairs; a pair scores 0, 1/4, 1/2, 3/4 or 1 for the candidate
(the mean of its two games). H0: the expected score is ``min_score``; H1: it is
``min_score + margin`` (as Leela Zero gates on [0, +35] Elo). The log-likelihood ratio
is the generalized (normal) approximation

    LLR = n (s1 - s0) (2 mean - s0 - s1) / (2 var)

over n pairs with the sample mean and variance of pair scores. Pass at
LLR >= log((1 - beta) / alpha), fail at LLR <= log(beta / (1 - alpha)). The variance is
shrunk toward what independent games at the midpoint would give, with the weight of
``PRIOR_PAIRS`` pairs: a variance estimated from a handful of pairs is too often small,
and that alone nearly doubled the false-pass rate in simulation (tests/unit/test_sprt.py).
At the game budget, the midpoint decides; when even winning every remaining pair could
not reach it, the test stops for futility.
Pure: no torch, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["pass", "fail", "continue"]
MIN_PAIRS = 8
PRIOR_PAIRS = 16


@dataclass(frozen=True, slots=True)
class SprtSettings:
    min_score: float
    margin: float = 0.05
    alpha: float = 0.05
    beta: float = 0.05
    max_games: int = 400

    @property
    def upper(self) -> float:
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        return math.log(self.beta / (1 - self.alpha))

    @property
    def midpoint(self) -> float:
        return self.min_score + self.margin / 2


@dataclass
class Sprt:
    settings: SprtSettings
    pairs: int = 0
    total: float = 0.0
    total_squares: float = 0.0
    decision: Decision = "continue"
    reason: str = ""
    counts: list[int] = field(default_factory=lambda: [0] * 5)

    def add(self, pair_score: float) -> Decision:
        """Record one pair (candidate's mean score over its two games); the decision now."""
        if self.decision != "continue":
            return self.decision
        self.pairs += 1
        self.total += pair_score
        self.total_squares += pair_score * pair_score
        self.counts[min(4, max(0, round(pair_score * 4)))] += 1
        self.decision, self.reason = self._decide()
        return self.decision

    @property
    def games(self) -> int:
        return 2 * self.pairs

    @property
    def mean(self) -> float:
        return self.total / self.pairs if self.pairs else 0.0

    @property
    def variance(self) -> float:
        if not self.pairs:
            return 0.0
        sample = max(0.0, self.total_squares / self.pairs - self.mean ** 2)
        middle = min(max(self.settings.midpoint, 0.01), 0.99)
        prior = middle * (1 - middle) / 2  # pair variance of independent, drawless games
        return (self.pairs * sample + PRIOR_PAIRS * prior) / (self.pairs + PRIOR_PAIRS)

    def llr(self) -> float:
        s0, s1 = self.settings.min_score, self.settings.min_score + self.settings.margin
        return self.pairs * (s1 - s0) * (2 * self.mean - s0 - s1) / (2 * self.variance)

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Confidence interval of the expected score."""
        half = z * math.sqrt(self.variance / self.pairs) if self.pairs else 1.0
        return max(0.0, self.mean - half), min(1.0, self.mean + half)

    def _decide(self) -> tuple[Decision, str]:
        settings = self.settings
        budget_pairs = max(1, settings.max_games // 2)
        if self.pairs >= MIN_PAIRS:
            llr = self.llr()
            if llr >= settings.upper:
                return "pass", f"SPRT: LLR {llr:.2f} reached {settings.upper:.2f}"
            if llr <= settings.lower:
                return "fail", f"SPRT: LLR {llr:.2f} reached {settings.lower:.2f}"
        if self.pairs >= budget_pairs:
            verdict: Decision = "pass" if self.mean >= settings.midpoint else "fail"
            return verdict, (f"game budget of {settings.max_games} spent: score "
                             f"{self.mean:.3f} vs {settings.midpoint:.3f}")
        best_case = (self.total + (budget_pairs - self.pairs)) / budget_pairs
        if best_case < settings.midpoint:
            return "fail", (f"futility: even winning the remaining {budget_pairs - self.pairs}"
                            f" pairs reaches {best_case:.3f} < {settings.midpoint:.3f}")
        return "continue", ""
