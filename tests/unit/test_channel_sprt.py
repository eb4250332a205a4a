"""The sandbox channel lets the SPRT's state through (an inconclusive bar must reach the
runner) and nothing that pretends to be more than it is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.sandbox.channel import GauntletEvents, Malformed

OPPONENT = {"opponent": "random", "minScore": 0.85, "score": 0.9, "interval": [0.8, 1.0],
            "games": 40, "played": 40, "passed": False, "reason": "game budget spent",
            "pentanomial": [0, 0, 4, 0, 16], "decision": "inconclusive", "llr": 1.2,
            "inconclusive": True, "expectedMoreGames": 120}


def result(**changes: Any) -> str:
    return json.dumps({"event": "result", "passed": False, "opponents": [OPPONENT],
                       "device": "cpu", "seconds": 1.0, "gpuSeconds": 0.0,
                       "fusedRules": False, "inconclusive": True,
                       "reason": "GateInconclusive", **changes})


def test_an_inconclusive_result_passes_the_channel() -> None:
    event = GauntletEvents(["random"]).accept(result())
    assert event["inconclusive"] is True
    assert event["opponents"][0]["expectedMoreGames"] == 120


@pytest.mark.parametrize(("changes", "text"), [
    ({"reason": "GatePassed"}, "GateInconclusive"),
    ({"inconclusive": "yes"}, "true or false"),
    ({"opponents": [{**OPPONENT, "decision": "maybe"}]}, "decision must be"),
    ({"opponents": [{**OPPONENT, "expectedMoreGames": -1}]}, "non-negative"),
])
def test_a_malformed_sprt_state_is_refused(changes: dict[str, Any], text: str) -> None:
    with pytest.raises(Malformed, match=text):
        GauntletEvents(["random"]).accept(result(**changes))
