"""Connect Four on bitboards: every rule a few whole-batch integer operations.

Why bitboards: today's float boards ([B, 6, 7], reference.py) find a winning move with 24
shifted copies of every board and a hundred small kernels; a GPU spends its time launching
them. Here a board is two int64 numbers in Pascal Pons's layout: bit ``7 * c + r`` is row
``r`` (0 the bottom) of column ``c``, and bit ``7 * c + 6`` always stays empty, so a shift
never carries a line from one column into the next. ``position`` holds the stones of the
player to move, ``mask`` every stone. A move is one addition, four in a row four
shift-and-ands, the cells that would complete four for either player two dozen
shift/and/or operations on ``[B, 2, 4]``.

Every method is a pure tensor function of the boards: fixed shapes, no host syncs, no
data-dependent indexing. That is the game interface of docs/gauntlets.md, which lets the
play loop (match.py) mask finished games instead of compacting them and replay a whole ply
as a CUDA graph. Randomness comes in as ``noise`` (``[B, actions]`` uniforms from the loop),
so the same seed plays the same games on any device.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ROWS, COLUMNS = 6, 7
STRIDE = ROWS + 1  # bits per column: six cells and one empty guard bit
BOTTOM = sum(1 << (STRIDE * c) for c in range(COLUMNS))  # the lowest cell of each column
BOARD = BOTTOM * ((1 << ROWS) - 1)  # every playable cell
# Shift per direction: up a column, along a row, both diagonals.
DIRECTIONS = (1, STRIDE, STRIDE - 1, STRIDE + 1)


@dataclass
class Boards:
    """A batch of positions. Tensor fields have the batch first (the loop slices them)."""

    position: torch.Tensor  # [B] int64: the stones of the player to move
    mask: torch.Tensor  # [B] int64: every stone
    mover: torch.Tensor  # [B] float: +1 when the first player is to move, -1 the second
    plies: torch.Tensor  # [B] long: moves played, passes included (42 end a game)

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    def clone(self) -> Boards:
        return Boards(self.position.clone(), self.mask.clone(), self.mover.clone(),
                      self.plies.clone())


def _bits(values: list[int] | list[list[int]], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


class Connect4:
    """The built-in game, and the worked example of the game interface."""

    name = "connect4"
    actions = COLUMNS
    alternating = True  # the player to move changes every ply: the loop may split by turn

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._column_bottom = _bits([1 << (STRIDE * c) for c in range(COLUMNS)], device)
        self._column_cells = _bits([((1 << ROWS) - 1) << (STRIDE * c)
                                    for c in range(COLUMNS)], device)
        self._column_top = _bits([1 << (STRIDE * c + ROWS - 1) for c in range(COLUMNS)],
                                 device)
        self._directions = _bits(list(DIRECTIONS), device)
        # [6, 7]: the bit of row r, column c, for turning bitboards into network planes.
        self._cell_bit = _bits([[STRIDE * c + r for c in range(COLUMNS)] for r in range(ROWS)],
                               device)
        self._centre = torch.tensor([-abs(c - 3) for c in range(COLUMNS)], dtype=torch.float,
                                    device=device)
        self._rules: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = self._threats

    # The interface the play loop uses.

    def initial(self, batch: int) -> Boards:
        zeros = torch.zeros(batch, dtype=torch.long, device=self.device)
        return Boards(zeros, zeros.clone(), torch.ones(batch, device=self.device), zeros.clone())

    def legal(self, boards: Boards) -> torch.Tensor:
        """[B, 7] bool: columns with room."""
        return (boards.mask.unsqueeze(1) & self._column_top) == 0

    def play(self, boards: Boards, moves: torch.Tensor,
             active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Play ``moves`` ([B] long) on the boards marked ``active``, in place. Returns
        (won: the mover made four in a row, full: 42 moves played), both [B] bool.

        A move into a full column places nothing and passes the turn, yet counts towards
        the 42: today's engine did so (it stacked a seventh stone that counted in the
        heights), and the tactical rule still makes such moves (see ``tactical``)."""
        moved = torch.ones_like(boards.mover, dtype=torch.bool) if active is None else active
        # Adding a column's bottom bit to the stones carries up to the first empty cell;
        # a full column carries into its guard bit, which the column's cells mask drops.
        landing = (boards.mask + self._column_bottom[moves]) & self._column_cells[moves]
        landing = landing * moved
        mine = boards.position | landing
        won = (landing != 0) & self._four(mine)
        mask = boards.mask | landing
        boards.mask.copy_(mask)
        boards.position.copy_(torch.where(moved, mine ^ mask, boards.position))
        boards.mover.copy_(torch.where(moved, -boards.mover, boards.mover))
        boards.plies.add_(moved)
        return won, boards.plies >= ROWS * COLUMNS

    def random_moves(self, boards: Boards, noise: torch.Tensor) -> torch.Tensor:
        """A uniformly random legal column (the largest noise among legal columns)."""
        return noise.masked_fill(~self.legal(boards), -1.0).argmax(1)

    def heuristic_moves(self, boards: Boards, noise: torch.Tensor) -> torch.Tensor:
        """Win if it can, block if it must, prefer the centre (ties broken by the noise)."""
        return self.tactical(boards, self._centre + noise * 0.5)

    def network(self) -> nn.Module:
        return PolicyNet()

    def policy_moves(self, network: nn.Module, boards: Boards) -> torch.Tensor:
        """How a policy network plays this game: through the tactical rules, so the network
        decides everything that is not an immediate win or block."""
        with torch.no_grad():
            logits = network(self.encode(boards))
        return self.tactical(boards, logits.float())

    # The rules behind them.

    def tactical(self, boards: Boards, preference: torch.Tensor) -> torch.Tensor:
        """The preferred legal column, restricted to blocks when the opponent threatens and
        then to wins when there are some. Kept as today's rule (reference.py) so the
        verdicts stay the same: when a win and a block both exist in different columns,
        nothing survives both restrictions and the move is column 0 (today's argmax over
        nothing), even when column 0 is full. That quirk decides measurably many games (in
        the v2 network's games against the heuristic, most pairs scoring 3/4 end in a draw
        by it), so changing it is a change of verdicts, not of speed."""
        allowed = self._rules(boards.position, boards.mask)
        return preference.masked_fill(~allowed, float("-inf")).argmax(1)

    def _threats(self, position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, 7] bool: the columns ``tactical`` may choose from."""
        legal = (mask.unsqueeze(1) & self._column_top) == 0
        playable = (mask + BOTTOM) & BOARD  # the cell each column's next stone lands on
        players = torch.stack([position, position ^ mask], 1)  # the mover, the opponent
        cells = self._completing(players) & playable.unsqueeze(1)  # [B, 2]
        columns = (cells.unsqueeze(2) & self._column_cells) != 0  # [B, 2, 7]
        win, block = columns[:, 0], columns[:, 1]
        allowed = torch.where(block.any(1, keepdim=True), legal & block, legal)
        return torch.where(win.any(1, keepdim=True), allowed & win, allowed)

    def _completing(self, stones: torch.Tensor) -> torch.Tensor:
        """Cells (empty or not) that would complete four in a row for ``stones`` ([...]):
        three of the player's stones on one side, or two and one, along each direction."""
        s = stones.unsqueeze(-1)
        d = self._directions
        up1, up2, up3 = s << d, s << 2 * d, s << 3 * d
        down1, down2, down3 = s >> d, s >> 2 * d, s >> 3 * d
        lines = ((up1 & up2 & (up3 | down1)) | (down1 & down2 & (down3 | up1))) & BOARD
        return lines[..., 0] | lines[..., 1] | lines[..., 2] | lines[..., 3]

    def _four(self, stones: torch.Tensor) -> torch.Tensor:
        """[B] bool: four of ``stones`` in a row in some direction."""
        s = stones.unsqueeze(-1)
        pairs = s & (s >> self._directions)
        return ((pairs & (pairs >> 2 * self._directions)) != 0).any(-1)

    def fuse(self) -> bool:
        """Compile the tactical rule into fused kernels (``torch.compile``): worth it only
        when the gate plays enough plies to repay the compile (match.fusing_pays_off).
        One compile for every batch size (the batch dimension is dynamic), done here on a
        few boards, so a missing toolchain or a compiler error leaves the eager rule in
        place (returns False) instead of failing the gate."""
        fused = torch.compile(self._threats, dynamic=True, fullgraph=True)
        boards = self.initial(8)
        try:
            works = bool(torch.equal(fused(boards.position, boards.mask),
                                     self._threats(boards.position, boards.mask)))
        except Exception as error:  # torch raises many kinds from the compiler stack
            warnings.warn(f"rules not fused, playing them eagerly: {error}", stacklevel=2)
            return False
        if works:
            self._rules = fused
        return works

    # Conversions: network input, and boards for tests and the reference engine.

    def encode(self, boards: Boards) -> torch.Tensor:
        """Network input [B, 2, 6, 7]: the mover's stones, then the opponent's."""
        players = torch.stack([boards.position, boards.position ^ boards.mask], 1)
        return ((players.view(-1, 2, 1, 1) >> self._cell_bit) & 1).float()

    def cells(self, boards: Boards) -> torch.Tensor:
        """[B, 6, 7] float: +1 the first player's stones, -1 the second's (row 0 bottom)."""
        planes = self.encode(boards)
        return (planes[:, 0] - planes[:, 1]) * boards.mover.view(-1, 1, 1)

    def from_cells(self, cells: torch.Tensor, mover: torch.Tensor) -> Boards:
        """Boards from [B, 6, 7] cells (+1 / -1 / 0) and whose turn it is."""
        weights = torch.ones_like(self._cell_bit) << self._cell_bit
        mine = (cells == mover.view(-1, 1, 1)).long() * weights
        every = (cells != 0).long() * weights
        return Boards(mine.flatten(1).sum(1), every.flatten(1).sum(1), mover.float().clone(),
                      (cells != 0).flatten(1).sum(1))


class PolicyNet(nn.Module):
    """Connect Four policy: two conv layers and a linear head to 7 column logits."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(channels * ROWS * COLUMNS, COLUMNS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.body(x).flatten(1))
        return logits
