"""The SPRT's parts: the fitted likelihood, the minimum sample, truncation to inconclusive,
and the expected sample sizes that validate and plan report. Error rates across the space
are in test_sprt_calibration.py."""

from __future__ import annotations

import math
import random

import pytest

from reconciler.gauntlet.sprt import (
    MIN_GAMES,
    SCORES,
    Sprt,
    SprtSettings,
    expected_games,
    llr,
    pentanomial,
    simulate,
)


def closest_kl(counts: list[int], s: float) -> float:
    """min KL(p || q) over pentanomials q of mean s, by an independent route: the dual
    max_x sum p log(1 + x (a - s)), by golden-section search (p regularised as in sprt)."""
    kept = [max(c, 1e-3) for c in counts]
    p = [c / sum(kept) for c in kept]
    low, high = -1 / (1 - s) + 1e-12, 1 / s - 1e-12

    def dual(x: float) -> float:
        return sum(pi * math.log(1 + x * (a - s)) for pi, a in zip(p, SCORES, strict=True))

    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(200):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if dual(left) < dual(right):
            low = left
        else:
            high = right
    return dual((low + high) / 2)


@pytest.mark.parametrize("seed", range(6))
def test_the_llr_is_the_likelihood_of_the_closest_distributions(seed: int) -> None:
    rng = random.Random(seed)
    counts = [rng.choice((0, 0, 1, 5, 40)) for _ in range(5)]
    counts[4] += 1
    s0, s1 = rng.choice(((0.5, 0.55), (0.85, 0.9), (0.3, 0.4), (0.95, 0.97)))
    expected = sum(counts) * (closest_kl(counts, s0) - closest_kl(counts, s1))
    assert llr(counts, s0, s1) == pytest.approx(expected, abs=1e-6)


def test_the_llr_points_to_the_hypothesis_the_data_resemble() -> None:
    assert llr([10, 20, 60, 20, 10], 0.4, 0.45) > 0  # mean 0.5, above both
    assert llr([10, 20, 60, 20, 10], 0.55, 0.6) < 0
    assert abs(llr([0, 0, 100, 0, 0], 0.475, 0.525)) < 1e-9  # the midpoint: no preference


def test_skewed_scores_are_judged_by_their_own_shape() -> None:
    """At a bar of 0.85 without draws, a pair is 0, 1/2 or 1: the pentanomial fit needs
    more evidence than a normal approximation with the sample variance would."""
    at_bar = [2, 0, 26, 0, 72]  # a model scoring 0.85, 100 pairs
    assert llr(at_bar, 0.85, 0.9) < 0 < llr(at_bar, 0.8, 0.85)


def test_no_decision_before_the_minimum_sample() -> None:
    test = Sprt(SprtSettings(min_score=0.5, margin=0.1, max_games=1000))
    for _ in range(MIN_GAMES // 2 - 1):
        assert test.add(1.0) == "continue"
    assert test.add(1.0) == "pass"
    assert test.games == MIN_GAMES


def test_a_spent_budget_without_a_decision_is_inconclusive_never_a_pass() -> None:
    """A model right at the midpoint used to pass half the time when the budget ran out."""
    test = Sprt(SprtSettings(min_score=0.475, margin=0.05, max_games=400))
    while test.add(0.5) == "continue":
        pass
    assert test.decision == "inconclusive" and test.games == 400
    low, high = test.interval()
    assert low == high == 0.5  # every pair scored one half
    assert "0.500" in test.reason and "more games expected" in test.reason
    assert test.expected_more_games() > 0


def test_more_games_expected_shrinks_as_the_evidence_grows() -> None:
    """Pairs alternate 1/4 and 3/4 (mean 1/2, the midpoint); then now and then a 3/4
    replaces a 1/4, which moves the LLR toward the pass bound without reaching it."""
    def spend(every: int) -> Sprt:
        test = Sprt(SprtSettings(min_score=0.475, margin=0.05, max_games=400))
        while test.add(0.75 if test.pairs % 2 or (every and test.pairs % every == 0)
                       else 0.25) == "continue":
            pass
        return test

    undecided, leaning = spend(0), spend(40)
    assert undecided.decision == leaning.decision == "inconclusive"
    assert abs(undecided.value) < 1e-9 < 1 < leaning.value < undecided.settings.upper
    assert 0 < leaning.expected_more_games() < undecided.expected_more_games()


def test_clear_cases_decide_at_the_minimum_and_correctly() -> None:
    settings = SprtSettings(min_score=0.6, margin=0.1, max_games=2000)
    strong = simulate(settings, pentanomial(0.9, 0.2), runs=200, seed=1)
    weak = simulate(settings, pentanomial(0.3, 0.2), runs=200, seed=2)
    assert strong.passed == weak.failed == 200
    assert strong.games == weak.games == 200 * MIN_GAMES


@pytest.mark.parametrize(("bar", "margin", "draws"), [(0.6, 0.05, 0.2), (0.85, 0.05, 0.0),
                                                      (0.3, 0.1, 0.5)])
def test_expected_games_match_simulation(bar: float, margin: float, draws: float) -> None:
    settings = SprtSettings(min_score=bar, margin=margin, max_games=10 ** 6)
    for score in (bar, bar + margin):
        simulated = simulate(settings, pentanomial(score, draws), runs=300, seed=3)
        assert simulated.games / simulated.runs == pytest.approx(
            expected_games(settings, score, draws), rel=0.1)


def test_draws_shorten_the_test_so_no_draws_is_the_longest() -> None:
    settings = SprtSettings(min_score=0.6, margin=0.05)
    lengths = [expected_games(settings, 0.6, draws) for draws in (0.0, 0.3, 0.6)]
    assert lengths == sorted(lengths, reverse=True)
    assert 400 < lengths[0] < 600  # the example's heuristic bar outgrows a 400-game budget


def test_the_pentanomial_of_independent_games() -> None:
    pair = pentanomial(0.6, 0.2)
    assert sum(pair) == pytest.approx(1)
    assert sum(p * a for p, a in zip(pair, SCORES, strict=True)) == pytest.approx(0.6)
    assert pair[0] == pytest.approx(0.3 ** 2)  # a game is lost with (1 - 0.2) * (1 - 0.625)
    assert pentanomial(0.95, 0.3) == pytest.approx(pentanomial(0.95, 0.1))  # room for 10 %
    assert pentanomial(0.95, 0.1)[0] == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize(("score", "margin"), [(0.0, 0.05), (0.96, 0.05), (0.5, 0.0)])
def test_hypotheses_must_lie_inside_the_score_range(score: float, margin: float) -> None:
    with pytest.raises(ValueError, match="0 < minScore"):
        SprtSettings(min_score=score, margin=margin)


def test_settings_from_a_match_spec_let_an_opponent_override() -> None:
    match = {"games": 600, "sprt": {"alpha": 0.01, "margin": 0.08}}
    settings = SprtSettings.for_opponent(match, {"name": "heuristic", "minScore": 0.6,
                                                 "games": 900, "margin": 0.04})
    assert (settings.max_games, settings.margin, settings.alpha, settings.beta) == \
        (900, 0.04, 0.01, 0.05)
    assert SprtSettings.for_opponent(match, {"name": "random", "minScore": 0.85}).margin == 0.08
