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
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from reconciler.gauntlet.sprt import Sprt, SprtSettings

# (boards, noise [B, actions] uniforms in [0, 1)) -> [B] long moves, with no host sync.
Player = Callable[[Any, torch.Tensor], torch.Tensor]
OPENING_PLIES = 4
PLIES_PER_GRAPH = 4  # plies per captured graph: one host sync per this many plies
MIN_HALF = 256  # games a side below which a smaller graph saves less than it costs
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
                "decision": self.sprt.decision, "llr": round(self.sprt.value, 3),
                "inconclusive": self.sprt.decision == "inconclusive",
                **({"expectedMoreGames": self.sprt.expected_more_games()}
                   if self.sprt.decision == "inconclusive" else {}),
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
        self.moves_made = torch.zeros(2 * pairs, dtype=torch.long, device=self.device)
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
        self.moves_made.add_(active)  # game lengths: what the benchmark counts
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
        self.moves_made = self.moves_made[rows]


def _play_eager(ply: Ply) -> tuple[torch.Tensor, torch.Tensor]:
    """[2 * pairs] results and moves after the opening, playing on only the games still
    on after each ply."""
    slot = torch.arange(2 * ply.pairs, device=ply.device)
    result = torch.empty(2 * ply.pairs, device=ply.device)
    moves = torch.empty(2 * ply.pairs, dtype=torch.long, device=ply.device)
    parity = 0
    while ply.result.numel():
        ply.step(parity)
        parity ^= 1
        result[slot] = ply.result  # finished games land in their slots before they go
        moves[slot] = ply.moves_made
        going = ply.result < 0
        slot = slot[going]
        ply.drop_finished()
    return result, moves


class _Graph:
    """``PLIES_PER_GRAPH`` plies of one fixed-size ``Ply``, captured as a CUDA graph (or,
    with ``capture=False``, played eagerly on each replay: how the tests check the
    shrinking below on a CPU)."""

    def __init__(self, ply: Ply, capture: bool = True) -> None:
        self.ply = ply
        self.graph: torch.cuda.CUDAGraph | None = None
        if not capture:
            return
        # Warm up on a side stream (handles, autotuning, compiling fused rules), then play
        # under the sync check: a game that syncs raises here, before any capture.
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            ply.step(0)
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")
            try:
                for parity in (1, 0):
                    ply.step(parity)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.plies()

    def plies(self) -> None:
        for index in range(PLIES_PER_GRAPH):
            self.ply.step(index % 2)
        going = self.ply.result < 0  # games still on in each half, rewritten every replay
        self.going = torch.stack([going[:self.ply.first].sum(), going[self.ply.first:].sum()])

    def replay(self) -> None:
        if self.graph is None:
            self.plies()
        else:
            self.graph.replay()


class Captured:
    """A batch's plies as CUDA graphs replayed until every game has ended.

    Inside a replay finished games are masked. Between replays, at the one host sync
    that asks how many games are still on, the batch moves to a graph captured for half
    the size once half of either side's games have ended: the games still on are gathered
    first (a stable sort, no sync), finished ones fill the rest and stay finished. Each
    size is captured once and reused by every batch."""

    def __init__(self, game: Any, candidate: Player, opponent: Player, pairs: int,
                 seed: torch.Tensor, capture: bool = True) -> None:
        self.game, self.candidate, self.opponent = game, candidate, opponent
        self.pairs, self.capture = pairs, capture
        self.graphs: dict[int, _Graph] = {}
        self.top = self.graph(pairs, seed)

    def graph(self, half: int, seed: torch.Tensor) -> _Graph:
        if half not in self.graphs:
            ply = Ply(self.game, self.candidate, self.opponent, half, seed.clone())
            self.graphs[half] = _Graph(ply, self.capture)
        return self.graphs[half]

    def play(self, seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ply = self.top.ply
        ply.noise.seed.copy_(seed)
        ply.ply.zero_()
        fresh = self.game.initial(2 * self.pairs)
        for field in fields(fresh):
            getattr(ply.boards, field.name).copy_(getattr(fresh, field.name))
        ply.result.fill_(-1.0)
        ply.moves_made.zero_()
        ply.colour.copy_(ply.open())
        result = torch.empty_like(ply.result)
        moves = torch.empty_like(ply.moves_made)
        slot = torch.arange(2 * self.pairs, device=ply.device)  # row -> game
        level = self.top
        while True:
            level.replay()
            first, second = level.going.tolist()  # the one host sync per replay
            half = level.ply.first
            smaller = max(MIN_HALF, 1 << (max(first, second, 1) - 1).bit_length())
            if first + second and smaller >= half:
                continue
            result[slot] = level.ply.result
            moves[slot] = level.ply.moves_made
            if not first + second:
                return result, moves
            level, slot = self.shrink(level, slot, smaller)

    def shrink(self, level: _Graph, slot: torch.Tensor,
               half: int) -> tuple[_Graph, torch.Tensor]:
        """Move the games still on into the graph of ``half`` games a side."""
        source = level.ply
        target = self.graph(half, source.noise.seed)
        finished = (source.result >= 0).to(torch.uint8)
        rows = torch.cat([
            torch.sort(finished[:source.first], stable=True).indices[:half],
            torch.sort(finished[source.first:], stable=True).indices[:half] + source.first])
        ply = target.ply
        for field in fields(source.boards):
            getattr(ply.boards, field.name).copy_(getattr(source.boards, field.name)[rows])
        for name in ("result", "moves_made", "colour"):
            getattr(ply, name).copy_(getattr(source, name)[rows])
        ply.noise.base.copy_(source.noise.base[rows])
        ply.noise.seed.copy_(source.noise.seed)
        ply.ply.copy_(source.ply)
        return target, slot[rows]


# Captured plies by (game, candidate, opponent, pairs), reused by every batch of that size;
# the key holds the objects themselves so an id is never reused for another player.
_captured: dict[tuple[Any, Player, Player, int], Captured | None] = {}


def play_pairs(game: Any, candidate: Player, opponent: Player, pairs: int,
               generator: torch.Generator) -> torch.Tensor:
    """[pairs] candidate scores (mean of its two games per pair), on the CPU."""
    result, _ = play_games(game, candidate, opponent, pairs, generator)
    return ((result[:pairs] + result[pairs:]) / 2).cpu()


def play_games(game: Any, candidate: Player, opponent: Player, pairs: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[2 * pairs] results for the candidate (the first half opened by it, the second the
    same openings with colours swapped) and each game's moves after the opening, on the
    device. A captured graph on CUDA where the game allows it, eager plies otherwise."""
    seed = torch.randint(0, 1 << 31, (1,), generator=generator, device=generator.device)
    with torch.no_grad():
        if seed.device.type == "cuda":
            key = (game, candidate, opponent, pairs)
            if key not in _captured:
                _captured[key] = _capture(game, candidate, opponent, pairs, seed)
            captured = _captured[key]
            if captured is not None:
                return captured.play(seed)
        return _play_eager(Ply(game, candidate, opponent, pairs, seed))


def _capture(game: Any, candidate: Player, opponent: Player, pairs: int,
             seed: torch.Tensor) -> Captured | None:
    """A captured ply, or None where the game cannot be captured (it syncs with the host,
    or uses something graphs do not support): that game then plays eagerly."""
    try:
        return Captured(game, candidate, opponent, pairs, seed)
    except RuntimeError as error:
        warnings.warn(f"plies not captured, played eagerly: {error}", stacklevel=3)
        return None


def fusing_pays_off(device: str, pairs: int, games: int, compile_seconds: float = 10.0,
                    saved_per_ply: float = 120e-6) -> bool:
    """Whether compiling a game's rules (``game.fuse()``) saves more time than it costs.

    A gate of ``games`` games in batches of ``pairs`` pairs plays about
    ``ceil(games / (2 * pairs)) * 40`` plies (a batch runs until its longest game ends, at
    most 38 plies after the opening, in replays of 4). Fused rules save ``saved_per_ply``
    seconds a ply: the unfused kernels' launches, about the same at every batch size
    since finished games are shed. Compiling costs ``compile_seconds`` in a fresh process.
    Both defaults were measured on an H200 (docs/gauntlets.md): fusing pays off past about
    83,000 plies, e.g. 10 M games at 1,024 pairs a batch or 270 M at 65,536; the example
    gate (1,200 games at 64 pairs, 400 plies) never comes close. On a CPU it never pays:
    eager plies there already skip finished games, and compiling needs a C++ toolchain."""
    if device != "cuda":
        return False
    return math.ceil(games / (2 * pairs)) * 40 * saved_per_ply > compile_seconds


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
