"""A remembered verdict is keyed by every input that decides it: a change to any of them
means the gate runs again rather than trust a verdict made under other conditions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reconciler.desired.documents import Desired, Gauntlet, Model, Origin, build
from reconciler.digests import DigestCache
from reconciler.gauntlet import runner
from reconciler.journal import Journal
from reconciler.store import Store

ORIGIN = Origin("x.yaml", "0" * 40, 0, 1)


def _inputs(spec: dict[str, object], game_source: bytes = b"") -> tuple[Gauntlet, Model,
                                                                          Desired]:
    gauntlet: Gauntlet = build("Gauntlet", {"metadata": {"name": "gate"}, "spec": spec}, ORIGIN)
    model: Model = build("Model", {"metadata": {"name": "policy"}, "spec": {
        "targets": ["t"], "artifact": {"uri": "m.pt", "sha256": "0" * 64},
        "pointer": {"path": "p"}, "gauntlet": "gate"}}, ORIGIN)
    desired = Desired("main@sha1:" + "a" * 40, {}, {}, {}, {"policy": model},
                      {"gate": gauntlet}, {}, {}, lambda obj: b"", lambda path: game_source)
    return gauntlet, model, desired


def test_every_input_of_a_verdict_is_in_its_key(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    keyer = runner.GauntletRunner(Journal(tmp_path / "j.db"), Store(tmp_path, DigestCache()))
    spec = {"match": {"game": "games/mine.py", "games": 40,
                      "opponents": [{"name": "random", "minScore": 0.5}]}}
    gauntlet, model, desired = _inputs(spec, b"# game v1")
    base = keyer.memo_key(model, gauntlet, "c" * 64, "p" * 64, desired)
    assert base == keyer.memo_key(model, gauntlet, "c" * 64, "p" * 64, desired)
    others = {
        "candidate": keyer.memo_key(model, gauntlet, "d" * 64, "p" * 64, desired),
        "previous": keyer.memo_key(model, gauntlet, "c" * 64, None, desired),
        "spec": keyer.memo_key(model, _inputs({**spec, "device": "cpu"})[0], "c" * 64,
                               "p" * 64, desired),
        "game module": keyer.memo_key(model, gauntlet, "c" * 64, "p" * 64,
                                      _inputs(spec, b"# game v2")[2]),
    }
    monkeypatch.setattr(runner, "worker_version", lambda: "another build of the worker")
    others["worker"] = keyer.memo_key(model, gauntlet, "c" * 64, "p" * 64, desired)
    assert base not in others.values() and len(set(others.values())) == len(others)


@pytest.mark.parametrize("changed", ["sprt.py", "match.py", "worker.py", "games/connect4.py"])
def test_the_worker_version_moves_with_the_engine_and_the_statistics(
        tmp_path: Path, changed: str) -> None:
    package = Path(runner.__file__).resolve().parent
    same, edited = tmp_path / "same", tmp_path / "edited"
    for copy in (same, edited):
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (edited / changed).write_text((edited / changed).read_text() + "\n# changed\n")
    assert runner.worker_version(same) == runner.worker_version(package)
    assert runner.worker_version(edited) != runner.worker_version(package)
