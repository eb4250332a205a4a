"""Head-to-head games between a candidate policy and each opponent, with early stopping.

Games come in colour-swapped pairs from the same seeded random opening, so even two
deterministic players produce varied games and colour advantage cancels out. A batch of
pairs is played at once on the device; its pair scores feed the opponent's SPRT one by
one, in order, so the decision (and the games it took) is what a sequential test would
have seen. Draws score one half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from reconciler.gauntlet.games.connect4 import Boards
from reconciler.gauntlet.sprt import Sprt, SprtSettings

Player = Callable[[Boards], torch.Tensor]
OPENING_PLIES = 4


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


def play_pairs(game: Any, candidate: Player, opponent: Player, pairs: int,
               generator: torch.Generator) -> torch.Tensor:
    """[pairs] candidate scores (mean of its two games per pair)."""
    boards = game.initial(2 * pairs)
    for _ in range(OPENING_PLIES):
        half = game.random_moves(Boards(boards.cells[:pairs], boards.heights[:pairs],
                                        boards.mover[:pairs]), generator)
        game.play(boards, torch.cat([half, half]))
    # First half: the candidate moves next; second half: the same openings, colours swapped.
    colour = torch.cat([boards.mover[:pairs], -boards.mover[pairs:]])
    result = torch.full((2 * pairs,), -1.0, device=boards.cells.device)
    while bool((result < 0).any()):
        active = result < 0
        turn = boards.mover == colour
        moves = torch.zeros_like(boards.heights[:, 0])
        for player, mask in ((candidate, turn & active), (opponent, ~turn & active)):
            index = mask.nonzero().squeeze(1)
            if len(index):  # each player thinks only about the boards where it is to move
                moves[index] = player(Boards(boards.cells[index], boards.heights[index],
                                             boards.mover[index]))
        mover = boards.mover.clone()
        won, full = game.play(boards, moves, active)
        result = torch.where(active & won, (mover == colour).float(), result)
        result = torch.where(active & ~won & full, torch.full_like(result, 0.5), result)
    return ((result[:pairs] + result[pairs:]) / 2).cpu()


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
