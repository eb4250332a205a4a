"""The SPRT by simulation: with known true scores its error rates hold, and it decides
with far fewer games than a fixed count at the same error rates."""

from __future__ import annotations

import random

import pytest

from reconciler.gauntlet.sprt import Sprt, SprtSettings

SETTINGS = SprtSettings(min_score=0.6, margin=0.1, alpha=0.05, beta=0.05, max_games=2000)
TRIALS = 600


def pair_score(rng: random.Random, true_score: float, draw_rate: float = 0.2) -> float:
    def game() -> float:
        roll = rng.random()
        if roll < draw_rate:
            return 0.5
        return 1.0 if rng.random() < (true_score - draw_rate / 2) / (1 - draw_rate) else 0.0
    return (game() + game()) / 2


def run(true_score: float, seed: int) -> Sprt:
    rng = random.Random(seed)
    test = Sprt(SETTINGS)
    while test.add(pair_score(rng, true_score)) == "continue":
        pass
    return test


def pass_rate(true_score: float) -> tuple[float, float]:
    tests = [run(true_score, seed) for seed in range(TRIALS)]
    return (sum(t.decision == "pass" for t in tests) / TRIALS,
            sum(t.games for t in tests) / TRIALS)


def test_error_rates_hold_at_both_hypotheses() -> None:
    at_h0, _ = pass_rate(SETTINGS.min_score)
    at_h1, _ = pass_rate(SETTINGS.min_score + SETTINGS.margin)
    slack = 2.5 * (0.05 * 0.95 / TRIALS) ** 0.5  # the simulation's own error
    assert at_h0 <= SETTINGS.alpha + slack
    assert at_h1 >= 1 - SETTINGS.beta - slack


def test_clear_cases_decide_quickly_and_correctly() -> None:
    strong_rate, strong_games = pass_rate(0.9)
    weak_rate, weak_games = pass_rate(0.3)
    assert strong_rate == 1.0 and weak_rate == 0.0
    assert strong_games < 100 and weak_games < 100


def test_budget_and_futility_stops() -> None:
    tight = Sprt(SprtSettings(min_score=0.5, margin=0.05, max_games=20))
    for _ in range(10):
        tight.add(0.5)
    assert tight.decision in ("pass", "fail") and "budget" in tight.reason
    futile = Sprt(SprtSettings(min_score=0.85, margin=0.05, max_games=40))
    while futile.add(0.0) == "continue":
        pass
    assert futile.decision == "fail"
    assert futile.games < 40


def test_report_has_a_confidence_interval_around_the_score() -> None:
    test = run(0.75, seed=1)
    low, high = test.interval()
    assert low <= test.mean <= high
    assert 0 < high - low < 0.5


@pytest.mark.parametrize("score", [0.0, 1.0])
def test_identical_pairs_do_not_decide_before_the_minimum(score: float) -> None:
    test = Sprt(SETTINGS)
    for _ in range(7):
        assert test.add(score) == "continue" or test.reason.startswith("futility")
