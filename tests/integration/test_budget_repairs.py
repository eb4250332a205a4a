"""Budgets stop restart storms and runaway promotions; they never keep the fleet away from
the declared, verified state. Hand flips of a canonical pointer are put back every time,
through ``reconciler apply`` as a subprocess, with the example-sized budget spent."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result
from tests.fleet import Fleet


def test_hand_flips_are_always_put_back_and_only_the_restart_waits(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.write("budget.yaml", "apiVersion: reconciler/v1\nkind: Budget\nmetadata: {name: b}\n"
                "spec: {restartsPerHour: 2, promotionsPerDay: 1}\n")
    fleet.commit("tight budgets")
    config = ("--config", str(fleet.settings_file))
    assert cli("apply", *config).returncode == 0
    pointer = fleet.root / "models" / "current.bin"
    declared = os.readlink(pointer)
    stray = fleet.root / "models" / "ungated.bin"
    stray.write_bytes(b"an undeclared file that never passed a gate")
    for attempt in range(4):
        hand = fleet.root / "models" / ".hand"
        os.symlink(stray, hand)
        os.replace(hand, pointer)
        applied = cli("apply", *config)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert os.readlink(pointer) == declared, f"hand flip {attempt + 1} was put back"
    status = json.loads(cli("status", *config, "--output", "json").stdout)
    model = next(o for o in status["objects"] if o["kind"] == "Model")
    assert (model["status"], model["reason"]) == ("Reconciling", "RestartDeferred")
    assert "the consumer still runs what it loaded" in model["message"]
    plan = cli("plan", *config)
    assert "waiting (RestartDeferred)" in plan.stdout, plan.stdout
