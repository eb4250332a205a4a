"""Head-to-head games between a candidate policy and each opponent, with early stopping.

Games come in colour-swapped pairs from the same seeded random opening, so even two
deterministic players produce varied games and colour advantage cancels out. A batch of
pairs is played at once on the device; its pair scores feed the opponent's SPRT one by
one, in order, so the decision (and the games it took) is what a sequential test would
have seen. Draws score one half.

The play loop never asks the host anything inside a ply (issue 18): finished games are
masked, not compacted, so every ply has the same shapes. On a GPU that ply is captured once
as a CUDA graph (a few plies per graph) and replayed until the batch ends, with one host
sync per replay to see whether every game has ended. On the CPU, where a sync costs
nothing, the same ply runs eagerly and finished games are dropped after each ply, so no
work is spent on them. Randomness is a hash of (seed, ply, game, action) computed on the
device (``Noise``): no generator state to capture, the same games on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from reconciler.gauntlet.sprt import Sprt, SprtSettings

# (boards, noise [B, actions] uniforms in [0, 1)) -> [B] long moves, with no host sync.
Player = Callable[[Any, torch.Tensor], torch.Tensor]
OPENING_PLIES = 4
PLIES_PER_GRAPH = 4  # plies per captured graph: one host sync per this many plies
_MASK32 = 0xFFFFFFFF


@dataclass
class OpponentResult:
    name: str
    min_score: float
    sprt: Sprt
    played: int = 0

    def to_json(self) -> dict[str, Any]:
        low, high = self.sprt.interval()
        return {"opponent": self.name, "minScore": self.min_score,
                "score": round(self.sprt.mean, 4), "interval": [round(low, 4), round(high, 4)],
                "games": self.sprt.games, "played": self.played,
                "passed": self.sprt.decision == "pass", "reason": self.sprt.reason,
                "pentanomial": self.sprt.counts}


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash on int64 tensors (values below 2**32, products below 2**63,
    so no overflow on any device)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


class Noise:
    """Uniform noise [games, actions] for one ply: a hash of (seed, ply, game, action).

    Counter-based, so a captured ply draws fresh numbers on every replay by advancing a
    counter on the device, and a game keeps its numbers when finished games are dropped."""

    def __init__(self, games: int, actions: int, seed: torch.Tensor) -> None:
        cells = torch.arange(games * actions, device=seed.device).view(games, actions)
        self.base = _mix(cells)
        self.seed = seed  # [1] long below 2**31

    def keep(self, rows: torch.Tensor) -> None:
        self.base = self.base[rows]

    def draw(self, ply: torch.Tensor) -> torch.Tensor:
        key = _mix((self.seed + ply * 0x3C6EF372) & _MASK32)
        return (_mix(self.base ^ key) >> 8).float() * (1.0 / (1 << 24))


def _rows(boards: Any, rows: slice | torch.Tensor) -> Any:
    """The boards of some rows: a view for a slice (players only read it), a copy for an
    index. Boards are a dataclass whose tensor fields have the batch first."""
    return replace(boards, **{f.name: getattr(boards, f.name)[rows] for f in fields(boards)})


class Ply:
    """One ply of a batch, masked: every game is played on, finished ones are left as they
    are. The state is held in tensors updated in place, so a captured graph replays it."""

    def __init__(self, game: Any, candidate: Player, opponent: Player, pairs: int,
                 seed: torch.Tensor) -> None:
        self.game, self.candidate, self.opponent = game, candidate, opponent
        self.pairs = pairs
        self.boards = game.initial(2 * pairs)
        self.device = self.boards.mover.device
        self.noise = Noise(2 * pairs, game.actions, seed)
        self.ply = torch.zeros(1, dtype=torch.long, device=self.device)
        self.result = torch.full((2 * pairs,), -1.0, device=self.device)
        # Rows [0, first) are the games the candidate opened; for an alternating game the
        # candidate moves there on even plies and on the other rows on odd plies.
        self.first = pairs
        self.colour = self.open()

    def open(self) -> torch.Tensor:
        """The seeded random opening, the same on both games of a pair; returns the
        candidate's colour per game (it moves first in the first half)."""
        half = self.pairs
        for _ in range(OPENING_PLIES):
            noise = self.noise.draw(self.ply)[:half]
            moves = self.game.random_moves(_rows(self.boards, slice(0, half)), noise)
            self.game.play(self.boards, torch.cat([moves, moves]))
            self.ply += 1
        mover = self.boards.mover
        return torch.cat([mover[:half], -mover[half:]])

    def moves(self, parity: int, noise: torch.Tensor) -> torch.Tensor:
        """Each board's move by the player to move on it. An alternating game asks each
        player about its half of the batch only; another game asks both about every board."""
        if not getattr(self.game, "alternating", False):
            turn = self.boards.mover == self.colour
            return torch.where(turn, self.candidate(self.boards, noise),
                               self.opponent(self.boards, noise))
        parts = []
        for part, player in ((slice(0, self.first), (self.candidate, self.opponent)[parity]),
                             (slice(self.first, None), (self.opponent, self.candidate)[parity])):
            boards = _rows(self.boards, part)
            if boards.mover.shape[0]:
                parts.append(player(boards, noise[part]))
        return torch.cat(parts)

    def step(self, parity: int) -> None:
        """Play one ply; ``parity`` is the ply's number modulo 2 (fixed when captured)."""
        moves = self.moves(parity, self.noise.draw(self.ply))
        active = self.result < 0
        mover = self.boards.mover.clone()
        won, full = self.game.play(self.boards, moves, active)
        result = torch.where(active & won, (mover == self.colour).float(), self.result)
        self.result.copy_(torch.where(active & ~won & full, 0.5, result))
        self.ply += 1

    def drop_finished(self) -> None:
        """Keep only the games still on (eager only: shapes change, a sync per ply)."""
        going = self.result < 0
        if bool(going.all()):
            return
        self.first = int(going[:self.first].sum())
        rows = going.nonzero().squeeze(1)
        self.boards = _rows(self.boards, rows)
        self.noise.keep(rows)
        self.colour, self.result = self.colour[rows], self.result[rows]


def _play_eager(ply: Ply) -> torch.Tensor:
    """[2 * pairs] results, playing on only the games still on after each ply."""
    slot = torch.arange(2 * ply.pairs, device=ply.device)
    result = torch.empty(2 * ply.pairs, device=ply.device)
    parity = 0
    while ply.result.numel():
        ply.step(parity)
        parity ^= 1
        result[slot] = ply.result  # finished games land in their slots before they go
        going = ply.result < 0
        slot = slot[going]
        ply.drop_finished()
    return result


class Captured:
    """A batch's plies captured as one CUDA graph of ``PLIES_PER_GRAPH`` plies, replayed
    until every game has ended; a new batch copies a fresh opening into the same tensors."""

    def __init__(self, game: Any, candidate: Player, opponent: Player, pairs: int,
                 seed: torch.Tensor) -> None:
        self.ply = Ply(game, candidate, opponent, pairs, seed.clone())
        self.seed = self.ply.noise.seed
        # Warm up on a side stream (handles, autotuning, compiled kernels), under the sync
        # check: a game that syncs raises here, before any capture is attempted.
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")
            try:
                for parity in (0, 1):
                    self.ply.step(parity)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            for index in range(PLIES_PER_GRAPH):
                self.ply.step(index % 2)
            self.done = (self.ply.result >= 0).all()  # rewritten by every replay

    def play(self, seed: torch.Tensor) -> torch.Tensor:
        ply = self.ply
        self.seed.copy_(seed)
        ply.ply.zero_()
        fresh = ply.game.initial(2 * ply.pairs)
        for field in fields(fresh):
            getattr(ply.boards, field.name).copy_(getattr(fresh, field.name))
        ply.result.fill_(-1.0)
        ply.colour.copy_(ply.open())
        while True:
            self.graph.replay()
            if bool(self.done):  # the one host sync per replay
                return ply.result


# Captured plies by (game, candidate, opponent, pairs), reused by every batch of that size;
# the key holds the objects themselves so an id is never reused for another player.
_captured: dict[tuple[Any, Player, Player, int], Captured | None] = {}


def play_pairs(game: Any, candidate: Player, opponent: Player, pairs: int,
               generator: torch.Generator) -> torch.Tensor:
    """[pairs] candidate scores (mean of its two games per pair), on the CPU."""
    seed = torch.randint(0, 1 << 31, (1,), generator=generator, device=generator.device)
    with torch.no_grad():
        if seed.device.type == "cuda":
            key = (game, candidate, opponent, pairs)
            if key not in _captured:
                _captured[key] = _capture(game, candidate, opponent, pairs, seed)
            captured = _captured[key]
            if captured is not None:
                result = captured.play(seed)
                return ((result[:pairs] + result[pairs:]) / 2).cpu()
        result = _play_eager(Ply(game, candidate, opponent, pairs, seed))
    return ((result[:pairs] + result[pairs:]) / 2).cpu()


def _capture(game: Any, candidate: Player, opponent: Player, pairs: int,
             seed: torch.Tensor) -> Captured | None:
    """A captured ply, or None where the game cannot be captured (it syncs with the host,
    or uses something graphs do not support): that game then plays eagerly."""
    try:
        return Captured(game, candidate, opponent, pairs, seed)
    except RuntimeError:
        return None


def fusing_pays_off(device: str, pairs: int, games: int, compile_seconds: float = 20.0,
                    saved_per_ply: tuple[float, float] = (60e-6, 1.5e-9)) -> bool:
    """Whether compiling a game's rules (``game.fuse()``) saves more time than it costs.

    A gate of ``games`` games in batches of ``pairs`` pairs plays about
    ``ceil(games / (2 * pairs)) * 38`` plies (every batch runs until its longest game
    ends, at most 38 plies after the opening). A fused rule saves ``a + b * boards`` seconds
    a ply (``saved_per_ply``: launches of the unfused kernels, and their memory traffic);
    compiling costs ``compile_seconds``. The defaults were measured on an H100 (see
    docs/gauntlets.md). On a CPU the fused rules are never used: eager runs there already
    skip finished games, and compiling needs a C++ toolchain."""
    if device != "cuda":
        return False
    plies = math.ceil(games / (2 * pairs)) * 38
    a, b = saved_per_ply
    return plies * (a + b * 2 * pairs) > compile_seconds


def run_opponent(game: Any, candidate: Player, name: str, opponent: Player,
                 settings: SprtSettings, batch_pairs: int, generator: torch.Generator,
                 progress: Callable[[OpponentResult], None]) -> OpponentResult:
    outcome = OpponentResult(name, settings.min_score, Sprt(settings))
    while outcome.sprt.decision == "continue":
        remaining = settings.max_games // 2 - outcome.sprt.pairs
        scores = play_pairs(game, candidate, opponent, max(1, min(batch_pairs, remaining)),
                            generator)
        outcome.played += 2 * len(scores)
        for score in scores.tolist():
            if outcome.sprt.add(score) != "continue":
                break
        progress(outcome)
    return outcome
