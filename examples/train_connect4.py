"""Train the example's Connect Four policy networks (CPU, about five minutes).

    .venv/bin/python examples/train_connect4.py desired-state/models

writes two state dicts and prints their sha256 for the Model documents:

- ``connect4-policy-weak.pt`` imitates a "safe" teacher that, beyond the tactical rules
  every policy plays under (win if it can, block if it must), never hands the opponent an
  immediate win and otherwise prefers the centre. That beats random, not the heuristic
  (about 0.46 against it).
- ``connect4-policy-v2.pt`` continues from it with REINFORCE against the heuristic (and
  some random play): about 0.79 against the heuristic, 0.92 against random. It clears
  every bar of connect4-gate.

Same seed, same bytes (on the same torch build).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
from torch import nn

# Trained on the float-board engine the networks were first made with (same rules as the
# bitboard engine gauntlets play on), so the same seed still gives the same bytes.
from reconciler.gauntlet.games.reference import COLUMNS, Boards
from reconciler.gauntlet.games.reference import ReferenceConnect4 as Connect4

GAME = Connect4(torch.device("cpu"))


def safe_preference(boards: Boards) -> torch.Tensor:
    """Centre preference, minus a penalty for moves that let the opponent win next."""
    preference = torch.tensor([-abs(c - 3) for c in range(COLUMNS)], dtype=torch.float)
    penalty = torch.zeros(boards.size, COLUMNS)
    legal = GAME.legal(boards)
    for column in range(COLUMNS):
        after = boards.clone()
        moves = torch.full((boards.size,), column)
        GAME.play(after, moves, legal[:, column])
        gives = GAME._winning_moves(after, after.mover).any(1)
        penalty[:, column] = torch.where(legal[:, column] & gives, -10.0, 0.0)
    return preference.expand(boards.size, -1) + penalty


def positions(count: int, generator: torch.Generator) -> Boards:
    """Positions from games between random and heuristic players, at random depths."""
    boards = GAME.initial(count)
    depth = torch.randint(0, 30, (count,), generator=generator)
    for ply in range(30):
        active = (depth > ply) & GAME.legal(boards).any(1)
        use_heuristic = torch.rand(count, generator=generator) < 0.5
        moves = torch.where(use_heuristic, GAME.heuristic_moves(boards, generator),
                            GAME.random_moves(boards, generator))
        won, full = GAME.play(boards, moves, active)
        depth = torch.where(won | full, torch.zeros_like(depth), depth)
    return boards


def train(steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = GAME.network()
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    for _ in range(steps):
        boards = positions(512, generator)
        legal = GAME.legal(boards)
        keep = legal.any(1)
        preference = safe_preference(boards)
        labels = preference.masked_fill(~legal, float("-inf")).argmax(1)
        logits = network(GAME.encode(boards)).masked_fill(~legal, -1e9)
        loss = nn.functional.cross_entropy(logits[keep], labels[keep])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


def reinforce(network: nn.Module, iterations: int, seed: int, games: int = 256) -> nn.Module:
    """Policy gradient on the moves the tactical rules leave open; reward: the result."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network.train()
    for _ in range(iterations):
        boards = GAME.initial(2 * games)
        for _ in range(4):  # a random opening, played in both colours
            half = GAME.random_moves(Boards(boards.cells[:games], boards.heights[:games],
                                            boards.mover[:games]), generator)
            GAME.play(boards, torch.cat([half, half]))
        colour = torch.cat([boards.mover[:games], -boards.mover[games:]])
        random_opponent = torch.rand(2 * games, generator=generator) < 0.2
        result = torch.full((2 * games,), -1.0)
        log_probabilities = []
        while bool((result < 0).any()):
            active = result < 0
            legal = GAME.legal(boards)
            logits = network(GAME.encode(boards)).masked_fill(~legal, -1e9)
            policy = torch.distributions.Categorical(logits=logits)
            forced = (GAME._winning_moves(boards, boards.mover).any(1)
                      | GAME._winning_moves(boards, -boards.mover).any(1))
            ours = torch.where(forced, GAME.tactical(boards, logits.detach()),
                               policy.sample())
            theirs = torch.where(random_opponent, GAME.random_moves(boards, generator),
                                 GAME.heuristic_moves(boards, generator))
            our_turn = boards.mover == colour
            moves = torch.where(our_turn, ours, theirs)
            log_probabilities.append(torch.where(our_turn & active & ~forced,
                                                 policy.log_prob(moves), torch.zeros(2 * games)))
            mover = boards.mover.clone()
            won, full = GAME.play(boards, moves, active)
            result = torch.where(active & won, (mover == colour).float(), result)
            result = torch.where(active & ~won & full, torch.full_like(result, 0.5), result)
        advantage = result - result.mean()
        loss = -(torch.stack(log_probabilities).sum(0) * advantage).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


def main() -> int:
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    network = train(300, seed=7)
    for name, stage in (("connect4-policy-weak.pt", None), ("connect4-policy-v2.pt", 250)):
        if stage is not None:
            network = reinforce(network, stage, seed=7)
        path = folder / name
        torch.save(network.state_dict(), path)
        print(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
