"""Today's Connect Four engine and play loop, kept as the reference for issue 18's.

Used only by the equivalence test (tests/unit/test_connect4_engine.py) and the benchmark
(bench/gauntlet_bench.py), which measure the bitboard engine and sync-free loop against
them; gauntlets no longer run on it.

A batch of boards is a tensor ``[B, 6, 7]`` holding +1 for the first player's stones and
-1 for the second's (row 0 is the bottom). Moves apply with one scatter; a win is found
with one ``conv2d`` of the mover's stones against four kernels (row, column, both
diagonals): a sum of 4 anywhere is four in a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from reconciler.gauntlet.games.connect4 import PolicyNet

ROWS, COLUMNS = 6, 7
OPENING_PLIES = 4


def _win_kernels() -> torch.Tensor:
    kernels = torch.zeros(4, 1, 4, 4)
    kernels[0, 0, 0, :] = 1  # a row
    kernels[1, 0, :, 0] = 1  # a column
    kernels[2, 0] = torch.eye(4)  # a diagonal
    kernels[3, 0] = torch.eye(4).flip(1)  # the other diagonal
    return kernels


@dataclass
class Boards:
    """A batch of positions. ``mover`` is +1 or -1: whose turn it is on each board."""

    cells: torch.Tensor  # [B, 6, 7] float: +1, -1, 0
    heights: torch.Tensor  # [B, 7] long: stones in each column
    mover: torch.Tensor  # [B] float

    @property
    def size(self) -> int:
        return int(self.cells.shape[0])

    def clone(self) -> Boards:
        return Boards(self.cells.clone(), self.heights.clone(), self.mover.clone())


class ReferenceConnect4:
    """Today's rules on float boards."""

    name = "connect4"
    actions = COLUMNS

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._kernels = _win_kernels().to(device)
        self._centre = torch.tensor([-abs(c - 3) for c in range(COLUMNS)], dtype=torch.float,
                                    device=device)

    def initial(self, batch: int) -> Boards:
        return Boards(torch.zeros(batch, ROWS, COLUMNS, device=self.device),
                      torch.zeros(batch, COLUMNS, dtype=torch.long, device=self.device),
                      torch.ones(batch, device=self.device))

    def legal(self, boards: Boards) -> torch.Tensor:
        """[B, 7] bool: columns with room."""
        return boards.heights < ROWS

    def wins(self, cells: torch.Tensor, player: torch.Tensor) -> torch.Tensor:
        """[B] bool: ``player`` (per board) has four in a row on ``cells``."""
        mine = (cells == player.view(-1, 1, 1)).float().unsqueeze(1)
        padded = nn.functional.pad(mine, (0, 3, 0, 3))
        return bool_any(nn.functional.conv2d(padded, self._kernels) >= 4)

    def play(self, boards: Boards, moves: torch.Tensor,
             active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Play ``moves`` ([B] long) on the boards marked ``active``, in place.
        Returns (won: the mover made four in a row, full: no room left)."""
        rows = boards.heights.gather(1, moves.view(-1, 1)).squeeze(1)
        index = torch.arange(boards.size, device=self.device)
        keep = active if active is not None else torch.ones_like(rows, dtype=torch.bool)
        stone = torch.where(keep, boards.mover, torch.zeros_like(boards.mover))
        safe_rows = rows.clamp(max=ROWS - 1)
        boards.cells[index, safe_rows, moves] += stone
        boards.heights[index, moves] += keep.long()
        won = keep & self.wins(boards.cells, boards.mover)
        full = boards.heights.sum(1) >= ROWS * COLUMNS
        boards.mover = torch.where(keep, -boards.mover, boards.mover)
        return won, full

    def _winning_moves(self, boards: Boards, player: torch.Tensor) -> torch.Tensor:
        """[B, 7] bool: columns where ``player`` would complete four in a row now.

        For every cell, the runs of the player's stones in the eight directions (up to 3)
        come from 24 shifted views of one board; a stone landing where two opposite runs
        add up to 3 wins. One pass for all seven columns, no copies of the boards."""
        mine = nn.functional.pad((boards.cells == player.view(-1, 1, 1)).float(), (3, 3, 3, 3))

        def run(dr: int, dc: int) -> torch.Tensor:
            total = torch.zeros_like(boards.cells)
            streak = torch.ones_like(boards.cells)
            for step in range(1, 4):
                r, c = 3 + step * dr, 3 + step * dc
                streak = streak * mine[:, r:r + ROWS, c:c + COLUMNS]
                total = total + streak
            return total

        best = torch.zeros_like(boards.cells)
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            best = torch.maximum(best, run(dr, dc) + run(-dr, -dc))
        rows = boards.heights.clamp(max=ROWS - 1).unsqueeze(1)
        landing = best.gather(1, rows).squeeze(1)  # [B, 7]: the run where a stone would land
        return (landing >= 3) & self.legal(boards)

    def random_moves(self, boards: Boards, generator: torch.Generator) -> torch.Tensor:
        weights = self.legal(boards).float() + 1e-9
        return torch.multinomial(weights, 1, generator=generator).squeeze(1)

    def tactical(self, boards: Boards, preference: torch.Tensor) -> torch.Tensor:
        """Win if possible, else block the opponent's win, else the preferred legal move."""
        legal = self.legal(boards)
        win = self._winning_moves(boards, boards.mover)
        block = self._winning_moves(boards, -boards.mover)
        scores = preference.masked_fill(~legal, float("-inf"))
        scores = torch.where(block.any(1, keepdim=True),
                             scores.masked_fill(~block, float("-inf")), scores)
        scores = torch.where(win.any(1, keepdim=True),
                             scores.masked_fill(~win, float("-inf")), scores)
        return scores.argmax(1)

    def heuristic_moves(self, boards: Boards, generator: torch.Generator) -> torch.Tensor:
        """Win if it can, block if it must, prefer the centre (ties broken at random)."""
        noise = torch.rand(boards.size, COLUMNS, generator=generator,
                           device=generator.device) * 0.5
        return self.tactical(boards, self._centre + noise.to(self.device))

    def encode(self, boards: Boards) -> torch.Tensor:
        """Network input [B, 2, 6, 7]: the mover's stones, then the opponent's."""
        relative = boards.cells * boards.mover.view(-1, 1, 1)
        return torch.stack([(relative > 0).float(), (relative < 0).float()], dim=1)

    def network(self) -> nn.Module:
        return PolicyNet()

    def policy_moves(self, network: nn.Module, boards: Boards) -> torch.Tensor:
        """How a policy network plays this game: through the tactical rules above, so the
        network decides everything that is not an immediate win or block."""
        with torch.no_grad():
            logits = network(self.encode(boards))
        return self.tactical(boards, logits.float())


def bool_any(votes: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [B]: any true per batch element."""
    return votes.flatten(1).any(1)


def play_pairs_reference(game: ReferenceConnect4, candidate: Callable[[Boards], torch.Tensor],
                         opponent: Callable[[Boards], torch.Tensor], pairs: int,
                         generator: torch.Generator) -> torch.Tensor:
    """Today's loop: [pairs] candidate scores. Every ply compacts the boards each player is
    to move on (``nonzero``) and asks the host whether any game is left: a sync per ply."""
    boards = game.initial(2 * pairs)
    for _ in range(OPENING_PLIES):
        half = game.random_moves(Boards(boards.cells[:pairs], boards.heights[:pairs],
                                        boards.mover[:pairs]), generator)
        game.play(boards, torch.cat([half, half]))
    colour = torch.cat([boards.mover[:pairs], -boards.mover[pairs:]])
    result = torch.full((2 * pairs,), -1.0, device=boards.cells.device)
    while bool((result < 0).any()):
        active = result < 0
        turn = boards.mover == colour
        moves = torch.zeros_like(boards.heights[:, 0])
        for player, mask in ((candidate, turn & active), (opponent, ~turn & active)):
            index = mask.nonzero().squeeze(1)
            if len(index):
                moves[index] = player(Boards(boards.cells[index], boards.heights[index],
                                             boards.mover[index]))
        mover = boards.mover.clone()
        won, full = game.play(boards, moves, active)
        result = torch.where(active & won, (mover == colour).float(), result)
        result = torch.where(active & ~won & full, torch.full_like(result, 0.5), result)
    return ((result[:pairs] + result[pairs:]) / 2).cpu()
