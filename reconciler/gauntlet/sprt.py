"""Sequential gate on pair scores: a generalized SPRT on pentanomial counts (as fishtest's).

Why this shape: the gate promises that a model whose true score is exactly ``min_score``
passes at most ``alpha`` of the time, and one at ``min_score + margin`` at least
``1 - beta`` of the time, at every bar and every budget. A normal approximation with a
plug-in variance broke that promise where scores are skewed (a bar of 0.85 without draws),
and "the midpoint decides at the budget" turned truncated runs into coin flips.

The method. Games come in colour-swapped pairs; a pair scores 0, 1/4, 1/2, 3/4 or 1 for
the candidate, and the five counts of those outcomes (the pentanomial) are all the test
keeps. Under each hypothesis (H0: expected score ``s0 = min_score``; H1: ``s1 = s0 +
margin``) the likelihood is that of the maximum-likelihood pentanomial distribution whose
mean is the hypothesised score: the distribution closest (Kullback-Leibler) to the
observed one, ``q_i = p_i / (1 + x (a_i - s))`` with ``x`` the root of
``sum p_i (a_i - s) / (1 + x (a_i - s)) = 0``. The log-likelihood ratio over n pairs is
``n sum p_i log(q1_i / q0_i)``. Zero counts are regularised to ``EPSILON`` so that both
bounds of ``x`` exist. Pass at LLR >= log(1 / alpha), fail at LLR <= log(beta) (Wald's
bounds that hold whatever the stopping rule; see ``SprtSettings.upper``).

No decision before ``min_games`` (``MIN_GAMES`` by default). With independent games the
fitted test keeps alpha without one; where it decides earliest (wide margins at high bars,
the two games of a pair always agreeing) its early passes at the bar sit at alpha (0.047)
and drop to 0.036 with a 100-game minimum (docs/gauntlets.md, the sweep in
tests/unit/test_sprt_calibration.py). At the game budget without a decision the outcome
is ``inconclusive``: never a pass, never a fail; the result keeps the score, its interval
and the games the SPRT still expects to need.

``expected_games`` gives the test's expected length for planning and ``validate``.
Pure Python: no torch, no numpy, no I/O (the daemon imports it).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["pass", "fail", "inconclusive", "continue"]
SCORES = (0.0, 0.25, 0.5, 0.75, 1.0)  # a pair's score for the candidate, by outcome
EPSILON = 1e-3  # the count that stands in for an outcome not seen yet
TOLERANCE = 1e-7  # of the fitted distribution's mean (see _tilt)
MIN_GAMES = 100  # no early decision before this many games (see the module docstring)
Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class SprtSettings:
    """One opponent's test: H0 score = ``min_score``, H1 = ``min_score + margin``, error
    rates ``alpha`` (pass at H0) and ``beta`` (fail at H1), and a budget in games."""

    min_score: float
    margin: float = 0.05
    alpha: float = 0.05
    beta: float = 0.05
    max_games: int = 400
    min_games: int = MIN_GAMES

    def __post_init__(self) -> None:
        if not 0 < self.min_score < self.min_score + self.margin < 1:
            raise ValueError(f"the SPRT needs 0 < minScore < minScore + margin < 1, got "
                             f"{self.min_score} and margin {self.margin}")

    @classmethod
    def for_opponent(cls, match: Mapping[str, Any], opponent: Mapping[str, Any]
                     ) -> SprtSettings:
        """The settings a Gauntlet's ``match`` spec gives one of its opponents."""
        sprt = match.get("sprt", {})
        return cls(min_score=opponent["minScore"],
                   margin=opponent.get("margin", sprt.get("margin", 0.05)),
                   alpha=sprt.get("alpha", 0.05), beta=sprt.get("beta", 0.05),
                   max_games=opponent.get("games", match.get("games", 400)))

    @property
    def max_pairs(self) -> int:
        return max(1, self.max_games // 2)

    @property
    def min_pairs(self) -> int:
        return (self.min_games + 1) // 2

    @property
    def upper(self) -> float:
        """Pass bound. Wald: P(pass | H0) <= exp(-upper) = alpha for the exact likelihood
        ratio, whatever the minimum and the budget (log((1 - beta) / alpha), fishtest's
        choice, promises only alpha / (1 - beta); the difference costs ~2 % more games)."""
        return -math.log(self.alpha)

    @property
    def lower(self) -> float:
        """Fail bound: P(fail | H1) <= exp(lower) = beta, likewise."""
        return math.log(self.beta)

    @property
    def s1(self) -> float:
        return self.min_score + self.margin


def _tilt(probabilities: Sequence[float], s: float, x: float = 0.0) -> float:
    """The ``x`` of the distribution closest to ``probabilities`` with mean ``s``.

    ``f(x) = sum p_i d_i / (1 + x d_i)`` (``d_i = a_i - s``) falls strictly between the
    poles ``-1 / (1 - s)`` and ``1 / s``: Newton from ``x`` (a warm start: the previous
    pair's root), kept inside a shrinking bracket. The log-likelihood is stationary at the
    root, so stopping at |f| < TOLERANCE misses the LLR of n pairs by about
    n f^2 / (2 |f'|), under 1e-6 for a million pairs. Unrolled: the gate runs it per
    pair, and the calibration tests millions of times."""
    p0, p1, p2, p3, p4 = probabilities
    d0, d1, d2, d3, d4 = -s, 0.25 - s, 0.5 - s, 0.75 - s, 1 - s
    low, high = -1 / d4, -1 / d0
    for _ in range(200):
        t0, t1, t2 = d0 / (1 + x * d0), d1 / (1 + x * d1), d2 / (1 + x * d2)
        t3, t4 = d3 / (1 + x * d3), d4 / (1 + x * d4)
        value = p0 * t0 + p1 * t1 + p2 * t2 + p3 * t3 + p4 * t4
        if -TOLERANCE < value < TOLERANCE:
            break
        if value > 0:
            low = x
        else:
            high = x
        step = x + value / (p0 * t0 * t0 + p1 * t1 * t1 + p2 * t2 * t2 + p3 * t3 * t3
                            + p4 * t4 * t4)
        x = step if low < step < high else (low + high) / 2
    return x


def _increments(probabilities: Sequence[float], s0: float, s1: float,
                x0: float = 0.0, x1: float = 0.0) -> tuple[list[float], float, float]:
    """Per-outcome log(q1_i / q0_i) and the two tilts (warm starts for the next call)."""
    x0, x1 = _tilt(probabilities, s0, x0), _tilt(probabilities, s1, x1)
    a0, a1 = 1 - x0 * s0, 1 - x1 * s1  # 1 + x (a - s) at a = 0; each quarter adds x / 4
    b0, b1 = x0 / 4, x1 / 4
    log = math.log
    return ([log(a0 / a1), log((a0 + b0) / (a1 + b1)), log((a0 + 2 * b0) / (a1 + 2 * b1)),
             log((a0 + 3 * b0) / (a1 + 3 * b1)), log((a0 + 4 * b0) / (a1 + 4 * b1))], x0, x1)


def _regularised(counts: Sequence[float]) -> list[float]:
    kept = [c if c > 0 else EPSILON for c in counts]
    total = sum(kept)
    return [c / total for c in kept]


def llr(counts: Sequence[int], s0: float, s1: float) -> float:
    """The generalized log-likelihood ratio of H1 (mean ``s1``) over H0 (mean ``s0``)."""
    probabilities = _regularised(counts)
    steps, _, _ = _increments(probabilities, s0, s1)
    return sum(counts) * sum(p * step for p, step in zip(probabilities, steps, strict=True))


# Probabilists' Gauss-Hermite nodes and weights (5 points): E f(Z) for Z ~ N(0, 1).
HERMITE = ((0.0, 8 / 15), (1.355626179974266, 0.2220759220056126),
           (-1.355626179974266, 0.2220759220056126), (2.856970013872806, 0.011257411327720691),
           (-2.856970013872806, 0.011257411327720691))
OVERSHOOT = 0.583  # Siegmund: a walk crosses a bound by about this many step deviations


def _expected_steps(start: float, settings: SprtSettings, drift: float,
                    variance: float) -> float:
    """Expected steps of a walk (drift, variance per step) from ``start`` until it leaves
    the bounds, widened by the expected overshoot: the Brownian approximation."""
    over = OVERSHOOT * math.sqrt(variance)
    lower, upper = settings.lower - over, settings.upper + over
    if not lower < start < upper:
        return 0.0
    variance = max(variance, 1e-12)
    theta = -2 * drift / variance
    if abs(theta * (upper - lower)) < 1e-9:
        return (upper - start) * (start - lower) / variance
    # P(leave at the top) for a walk with exp(theta * position) a martingale, written so
    # that no exponent is positive.
    if theta < 0:
        top = math.expm1(theta * (start - lower)) / math.expm1(theta * (upper - lower))
    else:
        width = math.exp(-theta * (upper - lower))
        top = (math.exp(theta * (start - upper)) - width) / (1 - width)
    return (top * (upper - start) + (1 - top) * (lower - start)) / drift


def _walk(probabilities: Sequence[float], settings: SprtSettings,
          tilts: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Drift and variance of the LLR per pair if ``probabilities`` is the truth."""
    steps, _, _ = _increments(probabilities, settings.min_score, settings.s1, *tilts)
    drift = sum(p * step for p, step in zip(probabilities, steps, strict=True))
    return drift, sum(p * step * step for p, step in zip(probabilities, steps, strict=True)) \
        - drift * drift


def pentanomial(score: float, draw_rate: float) -> list[float]:
    """Pair-outcome probabilities for two independent games, each a draw with probability
    ``d`` and otherwise a win with probability ``(score - d/2) / (1 - d)``. A score near
    0 or 1 leaves room for few draws: ``d`` is capped at ``2 min(score, 1 - score)``."""
    draws = min(draw_rate, 2 * score, 2 * (1 - score))
    win = score - draws / 2
    game = (1 - draws - win, draws, win)
    pair = [0.0] * 5
    for first, p in enumerate(game):
        for second, q in enumerate(game):
            pair[first + second] += p * q
    return pair


def expected_games(settings: SprtSettings, true_score: float, draw_rate: float) -> float:
    """Games the SPRT (no budget) is expected to play for a model of ``true_score``.

    Assumes independent games at ``draw_rate`` (``pentanomial``); the fitted distributions
    converge to the true one tilted to each hypothesis, so each pair moves the LLR by
    ``log(q1_i / q0_i)`` for its outcome. Never less than ``min_games``."""
    # Weighted as a million pairs: an outcome that cannot happen keeps a negligible weight.
    million = [p * 1e6 for p in pentanomial(true_score, draw_rate)]
    drift, variance = _walk(_regularised(million), settings)
    # No decision before the minimum: the walk sets off from where it stands then.
    start, spread = settings.min_pairs * drift, math.sqrt(settings.min_pairs * variance)
    pairs = settings.min_pairs + sum(
        weight * _expected_steps(start + node * spread, settings, drift, variance)
        for node, weight in HERMITE)
    return 2 * pairs


@dataclass
class Sprt:
    """One opponent's test as its pairs arrive: the counts, the LLR and the decision."""

    settings: SprtSettings
    pairs: int = 0
    total: float = 0.0
    decision: Decision = "continue"
    reason: str = ""
    value: float = 0.0  # the LLR after the last pair
    counts: list[int] = field(default_factory=lambda: [0] * 5)
    _tilts: tuple[float, float] = field(default=(0.0, 0.0), repr=False)  # warm starts

    def add(self, pair_score: float) -> Decision:
        """Record one pair (candidate's mean score over its two games); the decision now."""
        if self.decision != "continue":
            return self.decision
        self.pairs += 1
        self.total += pair_score
        self.counts[min(4, max(0, round(pair_score * 4)))] += 1
        settings = self.settings
        if self.pairs >= settings.min_pairs or self.pairs >= settings.max_pairs:
            probabilities = _regularised(self.counts)
            steps, *tilts = _increments(probabilities, settings.min_score, settings.s1,
                                        *self._tilts)
            self._tilts = (tilts[0], tilts[1])
            self.value = self.pairs * sum(p * s for p, s in zip(probabilities, steps,
                                                                 strict=True))
            self.decision, self.reason = self._decide()
        return self.decision

    def _decide(self) -> tuple[Decision, str]:
        settings = self.settings
        if self.pairs >= settings.min_pairs:
            if self.value >= settings.upper:
                return "pass", f"SPRT: LLR {self.value:.2f} reached {settings.upper:.2f}"
            if self.value <= settings.lower:
                return "fail", f"SPRT: LLR {self.value:.2f} reached {settings.lower:.2f}"
        if self.pairs >= settings.max_pairs:
            low, high = self.interval()
            return "inconclusive", (
                f"game budget of {settings.max_games} spent without a decision: score "
                f"{self.mean:.3f} [{low:.3f}, {high:.3f}], LLR {self.value:.2f} within "
                f"({settings.lower:.2f}, {settings.upper:.2f}); about "
                f"{self.expected_more_games()} more games expected")
        return "continue", ""

    @property
    def games(self) -> int:
        return 2 * self.pairs

    @property
    def mean(self) -> float:
        return self.total / self.pairs if self.pairs else 0.0

    def interval(self, z: float = Z95) -> tuple[float, float]:
        """Confidence interval of the expected score (normal, from the pair variance)."""
        if not self.pairs:
            return 0.0, 1.0
        variance = sum(c * (a - self.mean) ** 2 for c, a in zip(self.counts, SCORES,
                                                                strict=True)) / self.pairs
        half = z * math.sqrt(variance / self.pairs)
        return max(0.0, self.mean - half), min(1.0, self.mean + half)

    def expected_more_games(self) -> int:
        """Games the SPRT still expects to need from here if the observed pair
        distribution is the truth (the walk's drift and spread estimated from it)."""
        drift, variance = _walk(_regularised(self.counts), self.settings, self._tilts)
        return 2 * math.ceil(_expected_steps(self.value, self.settings, drift, variance))


@dataclass(frozen=True, slots=True)
class Simulated:
    """Outcomes of ``runs`` simulated gates for one true score."""

    runs: int
    passed: int
    failed: int
    games: int  # in all runs together

    @property
    def decided(self) -> int:
        return self.passed + self.failed

    @property
    def pass_rate(self) -> float:
        """Among the runs that decided (an inconclusive run neither passes nor fails)."""
        return self.passed / self.decided if self.decided else 0.0


def simulate(settings: SprtSettings, probabilities: Sequence[float], runs: int,
             seed: int) -> Simulated:
    """Play ``runs`` gates through ``Sprt``, each pair drawn from the pentanomial
    ``probabilities`` (e.g. ``pentanomial(score, draws)``): how the tests and the bench
    check the promises."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(probabilities))
    passed = failed = games = 0
    for _ in range(runs):
        test = Sprt(settings)
        while test.add(SCORES[min(4, bisect.bisect(cumulative, rng.random()))]) == "continue":
            pass
        passed += test.decision == "pass"
        failed += test.decision == "fail"
        games += test.games
    return Simulated(runs, passed, failed, games)


def binomial_tolerance(runs: int, rate: float, tail: float = 1e-3) -> int:
    """The most events among ``runs`` that a true ``rate`` exceeds with chance < ``tail``:
    a simulated error rate above this count breaks the promise beyond simulation error.
    Summed in log space: ``(1 - rate) ** runs`` underflows past a few thousand runs."""
    log_term, events = runs * math.log1p(-rate), 0
    cumulative = math.exp(log_term)
    while 1 - cumulative > tail and events < runs:
        log_term += math.log((runs - events) / (events + 1) * rate / (1 - rate))
        events += 1
        cumulative += math.exp(log_term)
    return events
