"""A gate ends in one of: passed, rejected (remembered), inconclusive (never a pass), or
error — the tool, the device, a timeout — which is never remembered as a rejection,
retried with backoff, and shown as GateError. ``reconciler gauntlet`` tells them apart by
its exit code (0, 1, 2, 3), so a CI can too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import EXAMPLE, Result
from tests.fleet import Fleet

GOOD = "import json; print(json.dumps({'accuracy': 0.95}))"
POOR = "import json; print(json.dumps({'accuracy': 0.5}))"


def gated_fleet(tmp_path: Path, command: list[str]) -> Fleet:
    fleet = Fleet(tmp_path)
    fleet.gate(command)
    fleet.commit("a gated model")
    return fleet


def test_gauntlet_exit_codes_tell_a_broken_tool_from_a_rejected_model(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = gated_fleet(tmp_path, ["no-such-evaluator", "{artifact}"])
    config = ("--config", str(fleet.settings_file))
    broken = cli("gauntlet", "policy", *config)
    assert broken.returncode == 3, broken.stdout + broken.stderr
    assert broken.stdout.startswith("ERROR") and "exited with 127" in broken.stdout
    again = cli("gauntlet", "policy", *config)
    assert again.returncode == 3 and "remembered" not in again.stdout, "errors are not verdicts"
    fleet.gate(["python3", "-c", POOR])
    fleet.commit("an evaluator that runs, and a model under the bar")
    rejected = cli("gauntlet", "policy", *config)
    assert rejected.returncode == 1 and rejected.stdout.startswith("FAIL")
    remembered = cli("gauntlet", "policy", *config)
    assert remembered.returncode == 1 and "remembered" in remembered.stdout
    fleet.gate(["python3", "-c", GOOD])
    fleet.commit("a model over the bar")
    passed = cli("gauntlet", "policy", *config)
    assert passed.returncode == 0 and passed.stdout.startswith("PASS"), passed.stdout


def test_a_tool_error_in_a_pass_is_a_gate_error_retried_never_a_rejection(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = gated_fleet(tmp_path, ["no-such-evaluator", "{artifact}"])
    config = ("--config", str(fleet.settings_file))
    applied = cli("apply", *config)
    assert applied.returncode == 1
    status = json.loads(cli("status", *config, "--output", "json").stdout)
    model = next(o for o in status["objects"] if o["kind"] == "Model")
    assert (model["status"], model["reason"]) == ("Reconciling", "GateError")
    assert "could not judge" in model["message"]
    assert status["lastPass"]["result"] == "transient", "backed off, not stalled"
    fleet.gate(["python3", "-c", GOOD])
    fleet.commit("the evaluator is fixed")
    assert cli("apply", *config).returncode == 0
    assert (fleet.root / "models" / "current.bin").read_bytes() == b"weights-v1"


def test_an_inconclusive_gate_holds_exits_2_and_can_be_set_to_reject(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    """40 games are fewer than the sequential test's minimum sample: even a good model
    cannot pass on them, and the gate says inconclusive rather than guess."""
    fleet = Fleet(tmp_path)
    network = (EXAMPLE / "models" / "connect4-policy-v2.pt").read_bytes()
    fleet.model(network)
    text = (fleet.repo / "desired-state" / "model.yaml").read_text()
    fleet.write("model.yaml", text.replace("  pointer:", "  gauntlet: gate\n  pointer:"))
    fleet.write("gate.yaml", json.dumps({
        "apiVersion": "reconciler/v1", "kind": "Gauntlet", "metadata": {"name": "gate"},
        "spec": {"device": "cpu", "match": {"game": "connect4", "games": 40, "seed": 3,
                                            "opponents": [{"name": "random",
                                                           "minScore": 0.85}]}}}))
    fleet.commit("a gate whose budget cannot decide")
    config = ("--config", str(fleet.settings_file))
    before = json.loads(cli("plan", *config, "--output", "json").stdout)["cost"]
    [gate] = before["gates"]
    assert (gate["remembered"], gate["maxGames"], gate["secondsPerGame"]) == (None, 40, None)
    checked = cli("gauntlet", "policy", *config)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert checked.stdout.startswith("INCONCLUSIVE") and "more games expected" in checked.stdout
    assert cli("apply", *config).returncode == 1
    assert not (fleet.root / "models" / "current.bin").exists(), "never a pass"
    status = json.loads(cli("status", *config, "--output", "json").stdout)
    model = next(o for o in status["objects"] if o["kind"] == "Model")
    assert (model["status"], model["reason"]) == ("Stalled", "GateInconclusive")
    plan = json.loads(cli("plan", *config, "--output", "json").stdout)
    [cost] = next(a for a in plan["actions"] if a["kind"] == "Model")["gateCost"]
    assert cost["opponent"] == "random" and cost["maxGames"] == 40
    [gate] = plan["cost"]["gates"]
    assert (gate["remembered"], gate["expectedGamesAtBar"]) == ("inconclusive", 0), \
        "a remembered verdict plays nothing: the plan says so"
    assert gate["secondsPerGame"] > 0, "the seconds a game took are measured from the run"
    assert "verdict remembered (inconclusive)" in cli("plan", *config).stdout
    fleet.settings_file.write_text(fleet.settings_file.read_text()
                                   + "gates: {inconclusive: reject}\n")
    assert cli("apply", *config).returncode == 1
    status = json.loads(cli("status", *config, "--output", "json").stdout)
    model = next(o for o in status["objects"] if o["kind"] == "Model")
    assert (model["status"], model["reason"]) == ("Stalled", "GateInconclusive"), \
        "the remembered verdict is still inconclusive"
    assert "rejected" in model["message"]
