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
- moves per second (every move of both sides, the opening's too; network included) at
  1,024, 4,096, 16,384 and 65,536 pairs per batch, on the CPU (all its cores) and, when
  CUDA is present, on the GPU, for today's engine and loop (games/reference.py) and the
  bitboard engine with its sync-free loop (captured as CUDA graphs on the GPU), and on
  the GPU also with fused rules (``torch.compile``, its compile time reported). Targets
  (issue 18): the CPU path no slower than today at every size; on the GPU >= 5 M moves/s
  at 4,096 pairs, >= 30 M at 65,536, and >= 10x the same machine's CPU at 4,096.

Run: ``.venv/bin/python bench/gauntlet_bench.py`` (everything), ``--moves-only`` (the
moves per second alone), ``--cpu-sizes 1024,4096`` to spare a small machine.
"""

from __future__ import annotations

import argparse
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
from reconciler.gauntlet.games.reference import ReferenceConnect4, play_pairs_reference
from reconciler.gauntlet.match import OPENING_PLIES, play_games, play_pairs
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


SIZES = (1024, 4096, 16384, 65536)


def load_network(game: Any, device: torch.device) -> torch.nn.Module:
    network = game.network()
    network.load_state_dict(load_state_dict(MODEL, str(device)))
    return network.to(device).eval()  # type: ignore[no-any-return]


def games_per_second(device: torch.device, pairs: int, batch: int) -> float:
    game = Connect4(device)
    network = load_network(game, device)
    generator = torch.Generator(device=device).manual_seed(1)

    def candidate(boards: Any, noise: torch.Tensor) -> torch.Tensor:
        return game.policy_moves(network, boards)

    started = time.perf_counter()
    for _ in range(pairs // batch):
        play_pairs(game, candidate, game.heuristic_moves, batch, generator)
    return 2 * pairs / (time.perf_counter() - started)


def todays_batch(device: torch.device) -> Any:
    """Today's engine and loop: a function playing one batch, returning (moves, score)."""
    game = ReferenceConnect4(device)
    network = load_network(game, device)
    generator = torch.Generator(device=device).manual_seed(1)
    moves = 0

    def counted(player: Any) -> Any:
        def play(boards: Any) -> torch.Tensor:
            nonlocal moves
            moves += boards.size
            return player(boards)  # type: ignore[no-any-return]
        return play

    candidate = counted(lambda boards: game.policy_moves(network, boards))
    heuristic = counted(lambda boards: game.heuristic_moves(boards, generator))

    def batch(pairs: int) -> tuple[int, float]:
        nonlocal moves
        moves = 2 * pairs * OPENING_PLIES
        scores = play_pairs_reference(game, candidate, heuristic, pairs, generator)
        return moves, float(scores.mean())
    return batch


def new_batch(device: torch.device, fused: bool) -> Any:
    """The bitboard engine and sync-free loop: a function playing one batch."""
    game = Connect4(device)
    if fused:
        game.fuse()
    network = load_network(game, device)
    generator = torch.Generator(device=device).manual_seed(1)

    def candidate(boards: Any, noise: torch.Tensor) -> torch.Tensor:
        return game.policy_moves(network, boards)

    def batch(pairs: int) -> tuple[int, float]:
        result, moves = play_games(game, candidate, game.heuristic_moves, pairs, generator)
        return int(moves.sum()) + 2 * pairs * OPENING_PLIES, float(result.mean())
    return batch


def moves_per_second(batch: Any, device: torch.device, pairs: int,
                     min_seconds: float) -> dict[str, float]:
    """Moves per second over whole batches (at least ``min_seconds``), after a first batch
    that captures the graph (and compiles) on a GPU; on the CPU that first batch is timed
    too, as there is nothing to warm up but a batch costs many seconds."""
    started = time.perf_counter()
    moves, score = batch(pairs)
    first = time.perf_counter() - started
    total_moves, total_seconds, scores = 0, 0.0, []
    if device.type == "cpu":
        total_moves, total_seconds, scores = moves, first, [score]
    while total_seconds < min_seconds:
        started = time.perf_counter()
        moves, score = batch(pairs)
        total_seconds += time.perf_counter() - started
        total_moves += moves
        scores.append(score)
    return {"moves_per_s": total_moves / total_seconds, "first_batch_s": first,
            "batch_s": total_seconds / len(scores), "score": statistics.mean(scores),
            "moves_per_game": total_moves / (2 * pairs * len(scores))}


def moves_section(devices: dict[str, tuple[int, ...]], min_seconds: float,
                  fuse: bool) -> tuple[dict[str, object], dict[str, bool]]:
    results: dict[str, object] = {"cpu_threads": torch.get_num_threads()}
    rates: dict[tuple[str, str, int], float] = {}
    for name, sizes in devices.items():
        device = torch.device(name)
        if name == "cuda":
            results["gpu"] = torch.cuda.get_device_name()
        engines = {"today": todays_batch(device), "new": new_batch(device, fused=False)}
        if fuse and name == "cuda":
            engines["fused"] = new_batch(device, fused=True)
        for engine, batch in engines.items():
            if name == "cpu":  # a small batch first: lazy initialisation off the clock
                batch(64)
            for pairs in sizes:
                measured = moves_per_second(batch, device, pairs, min_seconds)
                rates[(name, engine, pairs)] = measured["moves_per_s"]
                key = f"{name}_{engine}_{pairs}"
                results[key] = {k: round(v, 4) for k, v in measured.items()} | {
                    "M_moves_per_s": round(measured["moves_per_s"] / 1e6, 3)}
                print(key, results[key], flush=True)
    checks: dict[str, bool] = {}
    for pairs in devices.get("cpu", ()):
        ratio = rates[("cpu", "new", pairs)] / rates[("cpu", "today", pairs)]
        results[f"cpu_new_vs_today_{pairs}"] = round(ratio, 2)
        checks[f"CPU: new path no slower than today at {pairs} pairs"] = ratio >= 1
    if "cuda" in devices:
        for pairs in devices["cuda"]:
            best = max(rates[("cuda", e, pairs)] for e in ("new", "fused")
                       if ("cuda", e, pairs) in rates)
            results[f"gpu_new_vs_today_{pairs}"] = round(
                best / rates[("cuda", "today", pairs)], 1)
        if 4096 in devices["cuda"]:
            checks["GPU >= 5 M moves/s at 4,096 pairs"] = rates[("cuda", "new", 4096)] >= 5e6
        if 65536 in devices["cuda"]:
            checks["GPU >= 30 M moves/s at 65,536 pairs"] = max(
                rates[("cuda", e, 65536)] for e in ("new", "fused")
                if ("cuda", e, 65536) in rates) >= 30e6
        if 4096 in devices["cuda"] and 4096 in devices.get("cpu", ()):
            ratio = rates[("cuda", "new", 4096)] / rates[("cpu", "new", 4096)]
            results["gpu_vs_all_cpu_cores_4096"] = round(ratio, 1)
            checks["GPU >= 10x all CPU cores at 4,096 pairs"] = ratio >= 10
    else:
        results["gpu_moves"] = "no CUDA device here: moves per second on a GPU not measured"
    return results, checks


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


def sizes(text: str) -> tuple[int, ...]:
    return tuple(int(size) for size in text.split(",") if size)


def main() -> int:
    parser = argparse.ArgumentParser(description="Gauntlet speed against in-run anchors.")
    parser.add_argument("--moves-only", action="store_true",
                        help="only moves per second (no batching or SPRT sections)")
    parser.add_argument("--cpu-sizes", type=sizes, default=SIZES,
                        help="pairs per batch on the CPU, comma-separated ('' for none)")
    parser.add_argument("--gpu-sizes", type=sizes, default=SIZES)
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="time each measurement over at least this long")
    parser.add_argument("--no-fuse", action="store_true", help="skip the compiled rules")
    options = parser.parse_args()
    torch.manual_seed(0)
    devices = {"cuda": options.gpu_sizes} if torch.cuda.is_available() and \
        options.gpu_sizes else {}
    if options.cpu_sizes:
        devices["cpu"] = options.cpu_sizes
    moves, moves_checks = moves_section(devices, options.min_seconds, not options.no_fuse)
    if options.moves_only:
        return finish(moves, moves_checks)
    cpu = torch.device("cpu")
    batched = games_per_second(cpu, pairs=2048, batch=1024)
    single = games_per_second(cpu, pairs=48, batch=1)
    versus_fixed = sprt_versus_fixed()
    table, table_kept = issue_table()
    results: dict[str, Any] = {
        "batched_games_per_s": round(batched),
        "one_pair_at_a_time_games_per_s": round(single, 1),
        "batched_speedup": round(batched / single, 1),
        **versus_fixed,
        "issue_14_table": table,
    }
    checks = {"batched >= 50x one at a time": results["batched_speedup"] >= 50,
              "SPRT >= 2x fewer games (typical scores)": results["sprt_saving_typical"] >= 2,
              "issue 14 table: both promises hold in every cell": table_kept}
    return finish(moves | results, moves_checks | checks)


if __name__ == "__main__":
    sys.exit(main())
