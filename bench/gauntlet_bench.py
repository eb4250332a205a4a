"""Gauntlet speed, each against an anchor measured in the same run.

- batched games per second (the v2 policy network against the heuristic, network
  inference included) vs the same games played one pair at a time (target: >= 50x);
- mean games to a decision with the SPRT vs a fixed-size test with the same achieved error
  rates (target: >= 2x fewer at typical scores), by simulation at the bar, at bar + margin
  and at typical true scores: the fixed test is sized for the error rates the SPRT
  achieved in this run, and its own rates are measured too;
- issue 14's table recomputed (target: both promises hold in every cell): the pass rate
  among runs that decide at the bar and at bar + margin, within a one-sided binomial
  tolerance of alpha and 1 - beta;
- when CUDA is present: moves per second at batch 4096 pairs, network included (goal:
  one million or more).

Run: ``.venv/bin/python bench/gauntlet_bench.py``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from report import finish

from reconciler.gauntlet.games.connect4 import Connect4
from reconciler.gauntlet.match import play_pairs
from reconciler.gauntlet.sprt import (
    SCORES,
    SprtSettings,
    binomial_tolerance,
    expected_games,
    pentanomial,
    simulate,
)
from reconciler.gauntlet.weights import load_state_dict

MODEL = Path(__file__).resolve().parent.parent / "desired-state" / "models" / \
    "connect4-policy-v2.pt"


def games_per_second(device: torch.device, pairs: int, batch: int) -> tuple[float, int]:
    game = Connect4(device)
    network = game.network()
    network.load_state_dict(load_state_dict(MODEL, str(device)))
    network = network.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(1)
    moves = 0

    def candidate(boards: object) -> torch.Tensor:
        return game.policy_moves(network, boards)  # type: ignore[arg-type]

    def heuristic(boards: object) -> torch.Tensor:
        nonlocal moves
        moves += int(boards.size)  # type: ignore[attr-defined]
        return game.heuristic_moves(boards, generator)  # type: ignore[arg-type]

    started = time.perf_counter()
    for _ in range(pairs // batch):
        play_pairs(game, candidate, heuristic, batch, generator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return 2 * pairs / elapsed, moves


SPRT_BAR, SPRT_MARGIN, SPRT_DRAWS = 0.6, 0.05, 0.2
SPRT_RUNS = 2000
TYPICAL_SCORES = (0.45, 0.55, 0.7, 0.8)
# Issue 14's table: bar, game budget, draw rate (margin 0.05, alpha = beta = 0.05).
ISSUE_TABLE = [(0.85, 400, 0.0), (0.85, 2000, 0.0), (0.85, 400, 0.3), (0.60, 400, 0.0),
               (0.60, 2000, 0.0), (0.50, 400, 0.0), (0.50, 2000, 0.3)]
TABLE_RUNS = 2000


def fixed_test(settings: SprtSettings, alpha: float, beta: float, runs: int
               ) -> tuple[int, float, float]:
    """The fixed-size test with the given error rates: n pairs, pass when their mean
    reaches c, n and c from the normal approximation of the pair mean (each hypothesis
    with its own pair variance). Its games, and its error rates measured by simulation."""
    normal = statistics.NormalDist()
    z_alpha, z_beta = normal.inv_cdf(1 - alpha), normal.inv_cdf(1 - beta)
    deviations = []
    for score in (settings.min_score, settings.s1):
        pair = pentanomial(score, SPRT_DRAWS)
        deviations.append(math.sqrt(sum(p * (a - score) ** 2
                                        for p, a in zip(pair, SCORES, strict=True))))
    pairs = math.ceil(((z_alpha * deviations[0] + z_beta * deviations[1])
                       / settings.margin) ** 2)
    threshold = pairs * (settings.min_score + z_alpha * deviations[0] / math.sqrt(pairs))
    passes = []
    for seed, score in enumerate((settings.min_score, settings.s1)):
        rng = random.Random(seed)
        cumulative = list(itertools.accumulate(pentanomial(score, SPRT_DRAWS)))
        passes.append(sum(sum(SCORES[min(4, bisect.bisect(cumulative, rng.random()))]
                              for _ in range(pairs)) >= threshold for _ in range(runs)))
    return 2 * pairs, passes[0] / runs, (runs - passes[1]) / runs


def sprt_versus_fixed() -> dict[str, object]:
    """Mean games to a decision: the SPRT without a budget (every run decides) against the
    fixed-size test sized for the error rates the SPRT achieved in this run."""
    settings = SprtSettings(min_score=SPRT_BAR, margin=SPRT_MARGIN, max_games=10 ** 6)
    runs = {score: simulate(settings, pentanomial(score, SPRT_DRAWS), SPRT_RUNS, 100 + seed)
            for seed, score in enumerate((SPRT_BAR, settings.s1, *TYPICAL_SCORES))}
    alpha = runs[SPRT_BAR].passed / SPRT_RUNS
    beta = runs[settings.s1].failed / SPRT_RUNS
    fixed, fixed_alpha, fixed_beta = fixed_test(settings, alpha, beta, SPRT_RUNS)
    boundary = statistics.mean(runs[s].games / SPRT_RUNS for s in (SPRT_BAR, settings.s1))
    typical = statistics.mean(runs[s].games / SPRT_RUNS for s in TYPICAL_SCORES)
    return {"sprt_achieved_alpha_beta": [alpha, beta],
            "fixed_games_same_error_rates": fixed,
            "fixed_achieved_alpha_beta": [fixed_alpha, fixed_beta],
            "sprt_mean_games_at_bar_and_bar_plus_margin": round(boundary),
            "sprt_mean_games_typical_scores": round(typical),
            "sprt_saving_at_bar_and_bar_plus_margin": round(fixed / boundary, 2),
            "sprt_saving_typical": round(fixed / typical, 2)}


def issue_table() -> tuple[list[dict[str, object]], bool]:
    """Each cell of issue 14's table at both hypotheses; whether every promise holds
    within a one-sided binomial tolerance among the runs that decide."""
    rows, kept = [], True
    for index, (bar, budget, draws) in enumerate(ISSUE_TABLE):
        settings = SprtSettings(min_score=bar, margin=0.05, max_games=budget)
        at_bar = simulate(settings, pentanomial(bar, draws), TABLE_RUNS, 2 * index)
        above = simulate(settings, pentanomial(bar + 0.05, draws), TABLE_RUNS, 2 * index + 1)
        holds = (at_bar.passed <= binomial_tolerance(at_bar.decided, settings.alpha)
                 and above.failed <= binomial_tolerance(above.decided, settings.beta))
        kept = kept and holds
        expected = round(expected_games(settings, bar, draws))
        rows.append({"bar": bar, "budget": budget, "draws": draws,
                     "pass_rate_at_bar": round(at_bar.pass_rate, 3),
                     "pass_rate_at_bar_plus_margin": round(above.pass_rate, 3),
                     "inconclusive_at_bar_and_above": [
                         round(1 - at_bar.decided / TABLE_RUNS, 3),
                         round(1 - above.decided / TABLE_RUNS, 3)],
                     "expected_games_at_bar": expected,
                     "promises": ("hold" if holds else "BROKEN") + (
                         "; budget below the expected length: often inconclusive by design"
                         if budget < expected else "")})
    return rows, kept


def main() -> int:
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    batched, _ = games_per_second(cpu, pairs=2048, batch=1024)
    single, _ = games_per_second(cpu, pairs=48, batch=1)
    versus_fixed = sprt_versus_fixed()
    table, table_kept = issue_table()
    results: dict[str, Any] = {
        "batched_games_per_s": round(batched),
        "one_pair_at_a_time_games_per_s": round(single, 1),
        "batched_speedup": round(batched / single, 1),
        **versus_fixed,
        "issue_14_table": table,
    }
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        games_per_second(gpu, pairs=4096, batch=4096)  # warm-up
        rate, moves = games_per_second(gpu, pairs=4 * 4096, batch=4096)
        results["gpu_games_per_s"] = round(rate)
        results["gpu_moves_per_s"] = round(rate * moves / (2 * 4 * 4096))
    else:
        results["gpu"] = "no CUDA device here: moves per second on a GPU not measured"
    checks = {"batched >= 50x one at a time": results["batched_speedup"] >= 50,
              "SPRT >= 2x fewer games (typical scores)": results["sprt_saving_typical"] >= 2,
              "issue 14 table: both promises hold in every cell": table_kept}
    return finish(results, checks)


if __name__ == "__main__":
    sys.exit(main())
