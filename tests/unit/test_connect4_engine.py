"""The bitboard engine and the sync-free play loop against today's (games/reference.py):
the same rules position by position, the same score distributions game by game, and no
host syncs inside a ply. On the CPU in CI; the device-parametrised tests also run on a GPU
when there is one (the captured-graph path)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from reconciler.gauntlet.games.check import host_syncs
from reconciler.gauntlet.games.connect4 import COLUMNS, Boards, Connect4
from reconciler.gauntlet.games.reference import Boards as FloatBoards
from reconciler.gauntlet.games.reference import ReferenceConnect4, play_pairs_reference
from reconciler.gauntlet.match import (
    Captured,
    Noise,
    Ply,
    _play_eager,
    fusing_pays_off,
    play_pairs,
)
from reconciler.gauntlet.weights import load_state_dict
from tests.conftest import EXAMPLE

CPU = torch.device("cpu")
DEVICES = [CPU, pytest.param(torch.device("cuda"), marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


def chi_square_sf(statistic: float, dof: int) -> float:
    """P(chi-square with an even ``dof`` > statistic), in closed form."""
    half = statistic / 2
    return math.exp(-half) * sum(half ** k / math.factorial(k) for k in range(dof // 2))


def homogeneity_p(first: list[float], second: list[float]) -> float:
    """p-value of a chi-square test that two samples of pair scores (0, 1/4, ..., 1) come
    from one distribution; bins empty in both are dropped, the dof rounded up to even
    (conservative: a smaller p-value never comes from the rounding)."""
    bins = [0.0, 0.25, 0.5, 0.75, 1.0]
    counts = [[sum(1 for s in sample if abs(s - b) < 1e-6) for b in bins]
              for sample in (first, second)]
    total = len(first) + len(second)
    statistic, used = 0.0, 0
    for column in zip(*counts, strict=True):
        if sum(column) == 0:
            continue
        used += 1
        for row, sample in zip(column, (first, second), strict=True):
            expected = sum(column) * len(sample) / total
            statistic += (row - expected) ** 2 / expected
    dof = used - 1
    return chi_square_sf(statistic, dof + dof % 2)


def reference_positions(games: int, seed: int) -> FloatBoards:
    """Positions of random games stopped at random depths, with today's engine."""
    game = ReferenceConnect4(CPU)
    generator = torch.Generator().manual_seed(seed)
    boards = game.initial(games)
    depth = torch.randint(0, 42, (games,), generator=generator)
    going = torch.ones(games, dtype=torch.bool)
    for ply in range(42):
        active = going & (depth > ply)
        won, full = game.play(boards, game.random_moves(boards, generator), active)
        going &= ~(active & (won | full))
    return boards


def test_the_bitboard_rules_are_todays_position_by_position() -> None:
    old, new = ReferenceConnect4(CPU), Connect4(CPU)
    floats = reference_positions(3000, seed=5)
    bits = new.from_cells(floats.cells, floats.mover)
    assert torch.equal(new.cells(bits), floats.cells)
    assert torch.equal(new.legal(bits), old.legal(floats))
    assert torch.equal(new.encode(bits), old.encode(floats))
    preference = torch.rand(3000, COLUMNS, generator=torch.Generator().manual_seed(6))
    moves = new.tactical(bits, preference)
    assert torch.equal(moves, old.tactical(floats, preference))
    threatened = old._winning_moves(floats, -floats.mover).any(1)
    assert threatened.sum() > 300, "the positions exercise the blocking rule"
    # Today's engine corrupts a board on a move into a full column (see the next test).
    legal = new.legal(bits).gather(1, moves.view(-1, 1)).squeeze(1)
    assert legal.float().mean() > 0.95
    won_new, full_new = new.play(bits, moves, legal)
    won_old, full_old = old.play(floats, moves, legal)
    assert won_new.sum() > 100, "the positions exercise wins"
    assert torch.equal(won_new, won_old) and torch.equal(full_new, full_old)
    assert torch.equal(new.cells(bits), floats.cells)
    assert torch.equal(bits.mover, floats.mover)


@pytest.mark.slow
def test_fused_rules_choose_the_same_columns() -> None:
    """torch.compile of the tactical rule (inductor's C++ on a CPU, Triton on a GPU: about
    30 s to compile here) against the eager rule, at a batch size it was not compiled for."""
    game = Connect4(CPU)
    floats = reference_positions(3000, seed=7)
    bits = game.from_cells(floats.cells, floats.mover)
    eager = game._threats(bits.position, bits.mask)
    assert game.fuse()
    assert torch.equal(game._rules(bits.position, bits.mask), eager)


def test_tactical_keeps_todays_column_when_a_win_and_a_block_compete() -> None:
    """Today's rule filters to blocks, then to wins: disjoint, nothing is left and today's
    argmax picks column 0, full or not. Kept: it decides measurably many games. Into a
    full column the move passes the turn and counts towards the 42 moves of a draw."""
    game = Connect4(CPU)
    cells = torch.zeros(2, 6, COLUMNS)
    cells[:, 0, :3] = 1.0  # X: three in the bottom row, a win at column 3
    cells[:, :3, 6] = -1.0  # O: three in column 6, a win there next
    cells[1, :, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])  # column 0 full
    boards = game.from_cells(cells, torch.ones(2))
    moves = game.heuristic_moves(boards, torch.zeros(2, COLUMNS))
    assert moves.tolist() == [0, 0]
    before = game.cells(boards)
    won, full = game.play(boards, moves)
    assert won.tolist() == [False, False] and full.tolist() == [False, False]
    assert boards.mover.tolist() == [-1.0, -1.0] and boards.plies.tolist() == [7, 12]
    assert torch.equal(game.cells(boards)[1], before[1]), "a pass places nothing"
    assert game.cells(boards)[0, 1, 0] == 1.0


def test_noise_is_uniform_fresh_every_ply_and_follows_kept_games() -> None:
    noise = Noise(4096, COLUMNS, torch.tensor([7]))
    first, second = noise.draw(torch.tensor([0])), noise.draw(torch.tensor([1]))
    assert float(first.min()) >= 0 and float(first.max()) < 1
    deciles = torch.histc(first, bins=10, min=0, max=1)
    expected = first.numel() / 10
    statistic = float(((deciles - expected) ** 2 / expected).sum())
    assert chi_square_sf(statistic, 10) > 0.001  # 9 dof rounded up: conservative
    assert (first == second).float().mean() < 0.001
    other_seed = Noise(4096, COLUMNS, torch.tensor([8])).draw(torch.tensor([0]))
    assert (first == other_seed).float().mean() < 0.001
    rows = torch.tensor([5, 9, 4000])
    noise.keep(rows)
    assert torch.equal(noise.draw(torch.tensor([1])), second[rows])


def test_random_moves_are_uniform_over_legal_columns() -> None:
    game = Connect4(CPU)
    boards = game.initial(7000)
    noise = Noise(7000, COLUMNS, torch.tensor([3])).draw(torch.tensor([0]))
    counts = torch.bincount(game.random_moves(boards, noise), minlength=COLUMNS).float()
    statistic = float(((counts - 1000) ** 2 / 1000).sum())
    assert chi_square_sf(statistic, 6) > 0.001
    column_0_full = Boards(boards.position, torch.full((7000,), 0b111111), boards.mover,
                           boards.plies)
    moves = game.random_moves(column_0_full, noise)
    assert (moves != 0).all() and len(set(moves.tolist())) == 6


def test_masking_finished_games_plays_the_same_games_as_dropping_them() -> None:
    """The captured path's masked plies and the CPU's compacted plies are one game for
    deterministic players: only the work on finished games differs."""
    game = Connect4(CPU)
    seed = torch.tensor([11])
    dropped, moves = _play_eager(Ply(game, game.heuristic_moves, game.random_moves, 300, seed))
    masked = Ply(game, game.heuristic_moves, game.random_moves, 300, seed)
    for ply in range(42):
        masked.step(ply % 2)
    assert (masked.result >= 0).all()
    assert torch.equal(masked.result, dropped)
    assert torch.equal(masked.moves_made, moves)
    assert torch.equal(masked.boards.plies, moves + 4), "the opening's 4 moves, then these"
    assert 0.85 < float(dropped.mean()) < 1.0, "the heuristic beats random"


def test_the_replayed_batch_shrinks_as_games_end_and_plays_the_same_games() -> None:
    """The GPU path's bookkeeping, replayed eagerly on the CPU: masked plies in replays of
    four, the games still on moved to ever smaller graphs, results back in their slots."""
    game = Connect4(CPU)
    batches = Captured(game, game.heuristic_moves, game.random_moves, 1500,
                       torch.tensor([0]), capture=False)
    for seed in (13, 14):  # the second batch reuses every size the first one made
        result, moves = batches.play(torch.tensor([seed]))
        expected = _play_eager(Ply(game, game.heuristic_moves, game.random_moves, 1500,
                                   torch.tensor([seed])))
        assert torch.equal(result, expected[0]) and torch.equal(moves, expected[1])
    assert sorted(batches.graphs) == [256, 512, 1024, 1500]


class TakingTurnsUnannounced(Connect4):
    """Connect Four that does not declare strict alternation: both players are asked
    about every board and the loop picks by whose turn it is."""

    alternating = False


def test_a_game_without_strict_turns_plays_the_same_games() -> None:
    seed = torch.tensor([12])
    plain, general = Connect4(CPU), TakingTurnsUnannounced(CPU)
    expected, _ = _play_eager(Ply(plain, plain.heuristic_moves, plain.random_moves, 200, seed))
    got, _ = _play_eager(Ply(general, general.heuristic_moves, general.random_moves, 200, seed))
    assert torch.equal(got, expected)


def networks(device: torch.device) -> dict[str, torch.nn.Module]:
    loaded = {}
    for name in ("v2", "weak"):
        network = Connect4(device).network()
        network.load_state_dict(load_state_dict(
            EXAMPLE / "models" / f"connect4-policy-{name}.pt", str(device)))
        loaded[name] = network.to(device).eval()
    return loaded


def todays_scores(device: torch.device, network: torch.nn.Module, opponent: str,
                  pairs: int, seed: int) -> list[float]:
    game = ReferenceConnect4(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    players = {"heuristic": lambda b: game.heuristic_moves(b, generator),
               "random": lambda b: game.random_moves(b, generator)}
    return play_pairs_reference(game, lambda b: game.policy_moves(network, b),
                                players[opponent], pairs, generator).tolist()


def new_scores(device: torch.device, network: torch.nn.Module, opponent: str, pairs: int,
               seed: int) -> list[float]:
    game = Connect4(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    players = {"heuristic": game.heuristic_moves, "random": game.random_moves}

    def candidate(boards: Any, noise: torch.Tensor) -> torch.Tensor:
        return game.policy_moves(network, boards)

    scores: list[float] = []
    for _ in range(2):  # two batches: on a GPU the second replays the captured graph
        scores += play_pairs(game, candidate, players[opponent], pairs // 2, generator).tolist()
    return scores


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("opponent", ["heuristic", "random"])
def test_the_new_path_scores_like_todays(device: torch.device, opponent: str) -> None:
    """Same verdicts: the pentanomial distribution of pair scores is today's (chi-square
    homogeneity, 1,200 pairs each), and the test can tell the weak model from v2."""
    nets = networks(device)
    today = todays_scores(device, nets["v2"], opponent, 1200, seed=21)
    new = new_scores(device, nets["v2"], opponent, 1200, seed=22)
    assert homogeneity_p(today, new) > 0.001, (sum(today) / 1200, sum(new) / 1200)
    assert abs(sum(today) - sum(new)) / 1200 < 0.04
    if opponent == "heuristic":
        weak = new_scores(device, nets["weak"], opponent, 1200, seed=23)
        assert homogeneity_p(today, weak) < 1e-6, "the test has power"


class Syncing(Connect4):
    """A game whose heuristic asks the host: a Python branch on a tensor, an ``.item()``
    and a boolean-mask index."""

    def heuristic_moves(self, boards: Boards, noise: torch.Tensor) -> torch.Tensor:
        moves = super().heuristic_moves(boards, noise)
        if bool((moves == 3).any()):
            moves[moves > 5] = int(moves.max().item())
        return moves


@pytest.mark.parametrize("device", DEVICES)
def test_the_checker_passes_connect4_and_names_each_sync_of_a_game_that_syncs(
        device: torch.device) -> None:
    assert host_syncs(Connect4(device)) == []
    found = host_syncs(Syncing(device))
    here = Path(__file__).name
    assert any(f.startswith("against heuristic: __bool__ at " + here) for f in found), found
    assert any("item at " + here in f for f in found)
    assert any("__setitem__ at " + here in f for f in found)
    assert not any(f.startswith(("against random", "against previous")) for f in found)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_game_that_syncs_is_not_captured_and_still_plays_on_a_gpu() -> None:
    game = Syncing(torch.device("cuda"))
    generator = torch.Generator(device="cuda").manual_seed(0)
    with pytest.warns(UserWarning, match="not captured, played eagerly"):
        scores = play_pairs(game, game.heuristic_moves, game.random_moves, 200, generator)
    assert scores.shape == (200,) and 0.85 < float(scores.mean()) <= 1.0


def test_the_checker_command_exits_1_for_a_game_that_syncs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.gauntlet.games.check import main

    module = tmp_path / "mygame.py"
    module.write_text("from tests.unit.test_connect4_engine import Syncing\n"
                      "def create_game(device):\n    return Syncing(device)\n")
    assert main([str(module), "--device", "cpu"]) == 1
    assert "plies run eagerly" in capsys.readouterr().out


def test_fused_rules_are_compiled_only_when_the_gate_repays_the_compile() -> None:
    assert not fusing_pays_off("cpu", 65536, 10**9), "never on a CPU"
    assert not fusing_pays_off("cuda", 64, 3 * 400), "the example gate: seconds of play"
    assert not fusing_pays_off("cuda", 65536, 20_000)
    assert fusing_pays_off("cuda", 65536, 10**9)
    assert fusing_pays_off("cuda", 1024, 10**7), "small batches: more plies a game"
