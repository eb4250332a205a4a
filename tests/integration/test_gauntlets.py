"""Gauntlets through the real worker subprocess, on CPU, with the example's trained models."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired.documents import Budget, Desired, Model, Origin, build
from reconciler.digests import DigestCache
from reconciler.gauntlet.runner import GauntletRunner, Verdict
from reconciler.journal import Journal
from reconciler.store import Store
from tests.conftest import EXAMPLE, survivors

GOOD = EXAMPLE / "models" / "connect4-policy-v2.pt"
WEAK = EXAMPLE / "models" / "connect4-policy-weak.pt"
ORIGIN = Origin("x.yaml", "0" * 40, 0, 1)
MATCH = {"game": "connect4", "games": 400, "seed": 11, "batchSize": 64,
         "opponents": [{"name": "random", "minScore": 0.85},
                       {"name": "heuristic", "minScore": 0.6},
                       {"name": "previous", "minScore": 0.5}],
         "sprt": {"alpha": 0.05, "beta": 0.05, "margin": 0.05}}


def desired(spec: dict[str, Any], files: dict[str, bytes] | None = None,
            budget: Budget | None = None) -> tuple[Desired, Model]:
    gauntlet = build("Gauntlet", {"metadata": {"name": "gate"}, "spec": spec}, ORIGIN)
    model = build("Model", {"metadata": {"name": "policy"}, "spec": {
        "targets": ["t"], "artifact": {"uri": "m.pt", "sha256": "0" * 64},
        "pointer": {"path": "p"}, "gauntlet": "gate"}}, ORIGIN)
    state = Desired("main@sha1:" + "a" * 40, {}, {}, {}, {"policy": model},
                    {"gate": gauntlet}, {"b": budget} if budget else {}, {},
                    lambda obj: b"", lambda path: (files or {})[path])
    return state, model


def evaluate(tmp_path: Path, spec: dict[str, Any], artifact: Path = GOOD,
             files: dict[str, bytes] | None = None, budget: Budget | None = None,
             previous: Path | None = None) -> tuple[Verdict, Journal]:
    journal = Journal(tmp_path / "journal.db")
    state, model = desired(spec, files, budget)
    if previous is not None:  # canonical before, and still in the store under its digest
        store = Store(tmp_path / "store", DigestCache())
        journal.canonical("policy", store.put(previous.read_bytes()))
    verdict = GauntletRunner(journal, Store(tmp_path / "store", DigestCache())).evaluate(
        model, state, artifact.name, artifact)
    return verdict, journal


def test_the_good_model_passes_every_bar_and_skips_previous_on_a_first_promotion(
        tmp_path: Path) -> None:
    verdict, _ = evaluate(tmp_path, {"match": MATCH, "device": "cpu"})
    assert verdict.passed, verdict.message
    opponents = {o["opponent"]: o for o in verdict.evidence["opponents"]}
    assert opponents["previous"]["skipped"].startswith("no canonical model yet")
    for name in ("random", "heuristic"):
        low, high = opponents[name]["interval"]
        assert low <= opponents[name]["score"] <= high
        assert opponents[name]["games"] <= 400 and opponents[name]["reason"]
    assert verdict.evidence["device"] == "cpu"


@pytest.mark.slow
def test_the_weak_model_fails_at_the_heuristic_with_the_evidence(tmp_path: Path) -> None:
    verdict, _ = evaluate(tmp_path, {"match": MATCH, "device": "cpu"}, artifact=WEAK)
    assert not verdict.passed
    opponents = {o["opponent"]: o for o in verdict.evidence["opponents"]}
    assert opponents["random"]["passed"] is True
    assert opponents["heuristic"]["passed"] is False
    assert opponents["heuristic"]["score"] < 0.6
    assert "heuristic" in verdict.message and "FAIL" in verdict.message
    assert "previous" not in opponents, "a failed bar stops the gauntlet"


@pytest.mark.slow
def test_a_verdict_is_remembered_and_not_run_again(tmp_path: Path) -> None:
    _, journal = evaluate(tmp_path, {"match": MATCH, "device": "cpu"}, artifact=WEAK)
    runs = len([e for e in journal.events(limit=1000) if e.action == "gauntlet"])
    state, model = desired({"match": MATCH, "device": "cpu"})
    again = GauntletRunner(journal, Store(tmp_path / "store", DigestCache())).evaluate(
        model, state, WEAK.name, WEAK)
    assert again.remembered and not again.passed
    assert len([e for e in journal.events(limit=1000) if e.action == "gauntlet"]) == runs
    changed = GauntletRunner(journal, Store(tmp_path / "store", DigestCache())).evaluate(
        model, desired({"match": {**MATCH, "seed": 12}, "device": "cpu"})[0], WEAK.name, WEAK)
    assert not changed.remembered, "a changed gauntlet spec runs again"
    assert journal.forget_gates("policy", WEAK.name) == 2


@pytest.mark.slow
def test_previous_is_played_when_there_is_a_canonical_model(tmp_path: Path) -> None:
    verdict, _ = evaluate(tmp_path, {"match": MATCH, "device": "cpu"}, previous=WEAK)
    opponents = {o["opponent"]: o for o in verdict.evidence["opponents"]}
    assert "skipped" not in opponents["previous"]
    assert opponents["previous"]["score"] > 0.5 and verdict.passed


GAME_WRAPPER = ("from reconciler.gauntlet.games.connect4 import Connect4\n"
                "def create_game(device):\n")


@pytest.mark.parametrize(("body", "reason", "text"), [
    ("    raise RuntimeError('the evaluation harness broke')\n", "GauntletError",
     "the evaluation harness broke"),
    ("    bytearray(1 << 46)\n", "GauntletError", "out of memory"),
])
def test_a_gauntlet_that_raises_or_runs_out_of_memory_is_a_clear_failure(
        tmp_path: Path, body: str, reason: str, text: str) -> None:
    spec = {"match": {**MATCH, "game": "games/custom.py"}, "device": "cpu"}
    verdict, _ = evaluate(tmp_path, spec, files={"games/custom.py": (GAME_WRAPPER + body)
                                                 .encode()})
    assert not verdict.passed and verdict.reason == reason
    assert text in verdict.message


def test_a_hanging_gauntlet_is_killed_with_its_process_tree(tmp_path: Path) -> None:
    marker = f"3000.{os.getpid()}2"  # a sleep argument no other process has
    body = ("    import subprocess, time\n"
            f"    helper = subprocess.Popen(['sleep', '{marker}'])\n"
            "    time.sleep(300)\n")
    spec = {"match": {**MATCH, "game": "games/slow.py"}, "device": "cpu", "timeout": "3s"}
    started = time.monotonic()
    verdict, _ = evaluate(tmp_path, spec, files={"games/slow.py": (GAME_WRAPPER + body)
                                                 .encode()})
    assert time.monotonic() - started < 20
    assert verdict.reason == "GauntletTimeout" and "within 3s" in verdict.message
    assert survivors(marker) == []


def metrics_spec(script: str, runs: int = 2, rule: str = ">=") -> dict[str, Any]:
    return {"metrics": {"command": ["python3", "-c", script, "{artifact}"], "runs": runs,
                        "rules": [{"metric": "accuracy", "op": rule, "value": 0.9}]},
            "timeout": "30s"}


@pytest.mark.parametrize(("script", "passed", "text"), [
    ("import json, sys; print('evaluating', sys.argv[1]); print(json.dumps({'accuracy': 0.93}))",
     True, "pass every rule"),
    ("print('accuracy: 0.93')", False, "not a JSON object"),
    ("print('{\"accuracy\": NaN}')", False, "NaN is not a number JSON allows"),
    ("print('{\"loss\": 0.1}')", False, "accuracy is missing"),
    ("print('{\"accuracy\": 0.5}')", False, "accuracy 0.5 is not >= 0.9"),
    ("import json, random; print(json.dumps({'accuracy': random.random()}))", False,
     "not deterministic"),
])
def test_metrics_gauntlets(tmp_path: Path, script: str, passed: bool, text: str) -> None:
    verdict, _ = evaluate(tmp_path, metrics_spec(script))
    assert verdict.passed is passed, verdict.message
    assert text in verdict.message


def test_exhausted_gpu_budget_blocks_before_running(tmp_path: Path) -> None:
    budget = Budget("b", ORIGIN, 100.0, None, None)
    verdict, journal = evaluate(tmp_path, {**metrics_spec("print(1)"), "gpuSeconds": 500},
                                budget=budget)
    assert verdict.reason == "BudgetExhausted" and "GPU budget exhausted" in verdict.message
    assert not [e for e in journal.events(limit=100) if e.action == "gauntlet"]


def test_a_game_module_from_the_repository_plugs_in(tmp_path: Path) -> None:
    module = (b"from reconciler.gauntlet.games.connect4 import Connect4\n"
              b"def create_game(device):\n    return Connect4(device)\n")
    spec = {"match": {**MATCH, "game": "games/mine.py"}, "device": "cpu"}
    verdict, _ = evaluate(tmp_path, spec, files={"games/mine.py": module})
    assert verdict.passed, verdict.message
    assert {o["opponent"] for o in verdict.evidence["opponents"]} == {
        "random", "heuristic", "previous"}


def test_a_stop_request_kills_the_gauntlet_and_gives_no_verdict(tmp_path: Path) -> None:
    body = "    import time\n    time.sleep(300)\n"
    spec = {"match": {**MATCH, "game": "games/slow.py"}, "device": "cpu", "timeout": "5m"}
    journal = Journal(tmp_path / "journal.db")
    state, model = desired(spec, {"games/slow.py": (GAME_WRAPPER + body).encode()})
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    verdict = GauntletRunner(journal, Store(tmp_path / "store", DigestCache()), stop=stop).evaluate(
        model, state, GOOD.name, GOOD)
    assert time.monotonic() - started < 20
    assert verdict.reason == "GauntletStopped" and not verdict.passed
    key = GauntletRunner(journal, Store(tmp_path / "store", DigestCache())).memo_key(
        model, state.gauntlets["gate"], GOOD.name, None, state)
    assert journal.gate_verdict(key) is None, "a stop is no verdict on the model"
