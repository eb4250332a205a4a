"""Gauntlet speed, each against an anchor measured in the same run.

- batched games per second (the v2 policy network against the heuristic, network
  inference included) vs the same games played one pair at a time (target: >= 50x);
- mean games to a decision with the SPRT vs the fixed game count that reaches the same
  error rates (target: >= 2x fewer), by simulation at the decision boundaries and at
  typical true scores;
- when CUDA is present: moves per second at batch 4096 pairs, network included (goal:
  one million or more).

Run: ``.venv/bin/python bench/gauntlet_bench.py``.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from report import finish

from reconciler.gauntlet.games.connect4 import Connect4
from reconciler.gauntlet.match import play_pairs
from reconciler.gauntlet.sprt import Sprt, SprtSettings
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


def pair_score(rng: random.Random, true_score: float, draw_rate: float = 0.2) -> float:
    def game() -> float:
        if rng.random() < draw_rate:
            return 0.5
        return 1.0 if rng.random() < (true_score - draw_rate / 2) / (1 - draw_rate) else 0.0
    return (game() + game()) / 2


def sprt_games(settings: SprtSettings, true_score: float, trials: int = 800) -> float:
    total = 0
    for seed in range(trials):
        rng = random.Random(seed)
        test = Sprt(settings)
        while test.add(pair_score(rng, true_score)) == "continue":
            pass
        total += test.games
    return total / trials


def fixed_games(settings: SprtSettings, pair_variance: float) -> int:
    """Games a fixed-size test needs to keep both error rates: decide at the midpoint."""
    z = statistics.NormalDist().inv_cdf(1 - min(settings.alpha, settings.beta))
    return 2 * math.ceil((z * math.sqrt(pair_variance) / (settings.margin / 2)) ** 2)


def main() -> int:
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    batched, _ = games_per_second(cpu, pairs=2048, batch=1024)
    single, _ = games_per_second(cpu, pairs=48, batch=1)
    settings = SprtSettings(min_score=0.6, margin=0.05, alpha=0.05, beta=0.05, max_games=20000)
    variance = 0.6 * 0.4 / 2 * 0.8  # pair variance at the bar, 20 % draws
    fixed = fixed_games(settings, variance)
    boundary = statistics.mean(sprt_games(settings, s) for s in (0.6, 0.65))
    typical = statistics.mean(sprt_games(settings, s) for s in (0.45, 0.55, 0.7, 0.8))
    results = {
        "batched_games_per_s": round(batched),
        "one_pair_at_a_time_games_per_s": round(single, 1),
        "batched_speedup": round(batched / single, 1),
        "fixed_games_same_error_rates": fixed,
        "sprt_mean_games_at_boundaries": round(boundary),
        "sprt_mean_games_typical_scores": round(typical),
        "sprt_saving_at_boundaries": round(fixed / boundary, 2),
        "sprt_saving_typical": round(fixed / typical, 2),
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
              "SPRT >= 2x fewer games (typical scores)": results["sprt_saving_typical"] >= 2}
    return finish(results, checks)


if __name__ == "__main__":
    sys.exit(main())
