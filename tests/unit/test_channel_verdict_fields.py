"""The worker's result may carry what the engine and the sequential test add (fused rules,
an inconclusive decision, the LLR, the games still expected) — each checked as strictly as
the rest, so a forged value fails the check instead of reaching the daemon."""

from __future__ import annotations

import json

import pytest

from reconciler.sandbox.channel import GauntletEvents, Malformed

OPPONENT = {"opponent": "random", "minScore": 0.85, "score": 0.8, "interval": [0.7, 0.9],
            "games": 400, "played": 400, "passed": False, "reason": "budget spent",
            "pentanomial": [1, 2, 3, 4, 5], "decision": "inconclusive", "llr": 0.4,
            "inconclusive": True, "expectedMoreGames": 320}
RESULT = {"event": "result", "passed": False, "opponents": [OPPONENT], "device": "cpu",
          "seconds": 1.5, "gpuSeconds": 0.0, "fusedRules": False, "inconclusive": True,
          "reason": "GateInconclusive"}


def test_an_inconclusive_result_with_the_engines_fields_is_accepted() -> None:
    event = GauntletEvents(["random"]).accept(json.dumps(RESULT))
    assert event["inconclusive"] is True and event["opponents"][0]["expectedMoreGames"] == 320


@pytest.mark.parametrize(("change", "message"), [
    ({"decision": "maybe"}, "is not one the test makes"),
    ({"expectedMoreGames": -1}, "expectedMoreGames"),
    ({"inconclusive": "yes"}, "inconclusive"),
    ({"llr": float("inf")}, "Infinity is not a number JSON allows"),
    ({"llr": "high"}, "llr"),
])
def test_a_forged_opponent_field_fails_the_check(change: dict[str, object],
                                                 message: str) -> None:
    forged = {**RESULT, "opponents": [{**OPPONENT, **change}]}
    with pytest.raises(Malformed, match=message):
        GauntletEvents(["random"]).accept(json.dumps(forged))


def test_a_result_reason_must_be_a_verdict() -> None:
    with pytest.raises(Malformed, match="is not a verdict"):
        GauntletEvents(["random"]).accept(json.dumps({**RESULT, "reason": "GatePassed!"}))
