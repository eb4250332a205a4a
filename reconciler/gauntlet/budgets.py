"""Game budgets that fit the bar: the findings behind ``validate``'s budget warning.

A budget below the games the SPRT expects for a model at the bar leaves many runs near
the bar inconclusive (issue 14). This lives with the gauntlet because it needs the SPRT's
expected length, and speaks in desired-state findings so that ``validate`` locates and
prints it like any other; it leaves the state valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from reconciler.desired.documents import Gauntlet
from reconciler.desired.validate import Finding
from reconciler.gauntlet.sprt import SprtSettings, expected_games

# Draws shrink the variance of a game's score, so no draws is the longest test any draw
# rate gives: the warning never asks for fewer games than a drawish game would need.
ASSUMED_DRAW_RATE = 0.0


def budget_warnings(gauntlets: Iterable[Gauntlet]) -> Iterator[Finding]:
    """One finding per opponent whose game budget is below the SPRT's expected length at
    its bar, located at the opponent's own ``games`` or else at the opponent."""
    for gauntlet in sorted(gauntlets, key=lambda g: g.name):
        match = gauntlet.spec.get("match")
        if match is None:
            continue
        for index, opponent in enumerate(match["opponents"]):
            settings = SprtSettings.for_opponent(match, opponent)
            needed = expected_games(settings, settings.min_score, ASSUMED_DRAW_RATE)
            if settings.max_games >= needed:
                continue
            path = ("spec", "match", "opponents", index)
            origin = gauntlet.origin
            yield Finding(origin.file, f"opponent {opponent['name']!r}: a budget of "
                          f"{settings.max_games} games is below the {math.ceil(needed)} the "
                          f"SPRT expects for a model at minScore {settings.min_score} "
                          f"(margin {settings.margin}, no draws assumed); many runs near the "
                          "bar would end inconclusive", "gate-budget", origin.document,
                          (*path, "games") if "games" in opponent else path)


def gate_costs(gauntlet: Gauntlet) -> list[dict[str, object]]:
    """What a match gate is expected to play per opponent, for ``plan``: the SPRT's
    expected games for a model at the bar and at bar + margin (no draws assumed: the
    longest case), and the budget that caps it. Empty for a metrics gate."""
    match = gauntlet.spec.get("match")
    if match is None:
        return []
    costs: list[dict[str, object]] = []
    for opponent in match["opponents"]:
        settings = SprtSettings.for_opponent(match, opponent)
        costs.append({
            "opponent": opponent["name"],
            "expectedGamesAtBar": math.ceil(min(settings.max_games, expected_games(
                settings, settings.min_score, ASSUMED_DRAW_RATE))),
            "expectedGamesAtBarPlusMargin": math.ceil(min(settings.max_games, expected_games(
                settings, min(1.0, settings.min_score + settings.margin),
                ASSUMED_DRAW_RATE))),
            "maxGames": settings.max_games})
    return costs
