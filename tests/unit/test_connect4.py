"""The batched Connect Four engine (bitboards; torch on CPU here, the same code runs on a
GPU)."""

from __future__ import annotations

import pytest
import torch

from reconciler.gauntlet.games.connect4 import COLUMNS, ROWS, Boards, Connect4

GAME = Connect4(torch.device("cpu"))


def board(*rows: str) -> Boards:
    """Rows top to bottom, 'X' first player, 'O' second, '.' empty; X to move."""
    cells = torch.zeros(1, ROWS, COLUMNS)
    for top, text in enumerate(rows):
        for column, mark in enumerate(text):
            cells[0, ROWS - 1 - top, column] = {"X": 1.0, "O": -1.0, ".": 0.0}[mark]
    return GAME.from_cells(cells, torch.ones(1))


def noise(games: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(games, COLUMNS, generator=generator)


EMPTY = "......."


@pytest.mark.parametrize(("rows", "move", "direction"), [
    ((EMPTY,) * 5 + ("XXX.OOO",), 3, "row"),
    ((EMPTY,) * 3 + ("X......", "X.....O", "X....OO"), 0, "column"),
    ((EMPTY,) * 2 + ("......", "..XO...", ".XOO...", "XOOO..."), 3, "diagonal"),
    ((EMPTY,) * 2 + (EMPTY, "...OX..", "...OOX.", "...OOOX"), 3, "anti-diagonal"),
])
def test_the_winning_move_is_seen_in_every_direction(rows: tuple[str, ...], move: int,
                                                     direction: str) -> None:
    rows = tuple(r.ljust(COLUMNS, ".") for r in rows)
    position = board(*rows)
    won, full = GAME.play(position.clone(), torch.tensor([move]))
    assert won.tolist() == [True], direction
    assert full.tolist() == [False]
    other = next(c for c in range(COLUMNS) if c != move and GAME.legal(position)[0, c])
    assert GAME.play(position.clone(), torch.tensor([other]))[0].tolist() == [False]


def test_legal_moves_exclude_full_columns_and_play_alternates() -> None:
    boards = GAME.initial(2)
    for _ in range(6):
        GAME.play(boards, torch.tensor([0, 1]))
    legal = GAME.legal(boards)
    assert legal[0].tolist() == [False] + [True] * 6
    assert legal[1].tolist() == [True, False] + [True] * 5
    assert boards.mover.tolist() == [1.0, 1.0]
    assert GAME.cells(boards)[0, :, 0].tolist() == [1.0, -1.0] * 3


def test_heuristic_wins_when_it_can_and_blocks_when_it_must() -> None:
    generator = torch.Generator().manual_seed(0)
    can_win = board(*(EMPTY,) * 4, "OO.....", "XXX.OO.")
    assert GAME.heuristic_moves(can_win, noise(1, generator)).tolist() == [3]
    must_block = board(*(EMPTY,) * 4, "X......", "OOO.XX.")
    assert GAME.heuristic_moves(must_block, noise(1, generator)).tolist() == [3]
    assert GAME.heuristic_moves(GAME.initial(1), noise(1, generator)).tolist() == [3]


def play_out(first: str, second: str, games: int, seed: int) -> torch.Tensor:
    """Results for the first player: 1 win, 0.5 draw, 0 loss. Asserts termination."""
    generator = torch.Generator().manual_seed(seed)
    boards = GAME.initial(games)
    result = torch.full((games,), -1.0)
    for _ in range(ROWS * COLUMNS):
        active = result < 0
        if not active.any():
            break
        players = {"random": GAME.random_moves(boards, noise(games, generator)),
                   "heuristic": GAME.heuristic_moves(boards, noise(games, generator))}
        mover_first = boards.mover > 0
        moves = torch.where(mover_first, players[first], players[second])
        won, full = GAME.play(boards, moves, active)
        result = torch.where(active & won, mover_first.float(), result)
        result = torch.where(active & ~won & full, torch.full_like(result, 0.5), result)
    assert (result >= 0).all(), "every game ends within 42 plies"
    return result


def test_every_random_game_terminates_with_a_result() -> None:
    results = play_out("random", "random", 2000, seed=1)
    assert set(results.unique().tolist()) <= {0.0, 0.5, 1.0}


def test_heuristic_beats_random_at_least_90_percent() -> None:
    as_first = play_out("heuristic", "random", 1000, seed=2).mean().item()
    as_second = 1 - play_out("random", "heuristic", 1000, seed=3).mean().item()
    assert (as_first + as_second) / 2 >= 0.9
