"""The store is trusted by content, never by name: an object whose bytes were replaced
(same size, mtime put back — what a careless person or a hostile workload would do) is
never pointed at, never used as a rollback target or as the ``previous`` opponent; it is
quarantined, journaled, and ``status`` names it."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from reconciler.desired.documents import Budget, Desired, Model, Origin, build
from reconciler.digests import DigestCache
from reconciler.gauntlet.runner import GauntletRunner
from reconciler.journal import Journal
from reconciler.store import Store
from tests.conftest import Result
from tests.fleet import HEALTHY, Fleet, sha


def tamper(path: Path, replacement: bytes | None = None) -> None:
    """Other bytes of the same size, with the old mtime put back."""
    info = path.stat()
    os.chmod(path, 0o644)
    old = path.read_bytes()
    path.write_bytes(replacement if replacement is not None else bytes(b ^ 0xFF for b in old))
    os.chmod(path, 0o444)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_size == info.st_size and path.stat().st_mtime_ns == info.st_mtime_ns


def status(cli: Callable[..., Result], fleet: Fleet) -> tuple[str, dict[str, object]]:
    text = cli("status", "--config", str(fleet.settings_file))
    data = cli("status", "--config", str(fleet.settings_file), "--output", "json")
    assert text.returncode == 0 and data.returncode == 0, text.stderr + data.stderr
    return text.stdout, json.loads(data.stdout)


def test_a_tampered_canonical_object_is_quarantined_and_the_pointer_put_back_on_proven_bytes(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    assert fleet.apply().result == "changed"
    pointer = fleet.root / "models" / "current.bin"
    named = Path(os.readlink(pointer))
    tamper(named)
    outcome = fleet.apply()
    assert outcome.result == "changed", outcome.message
    assert pointer.read_bytes() == b"weights-v1", "re-fetched, proven, pointed at again"
    assert sha(Path(os.readlink(pointer)).read_bytes()) == named.name
    quarantine = list((fleet.state / "store" / "quarantine").iterdir())
    assert len(quarantine) == 1 and quarantine[0].read_bytes() != b"weights-v1"
    text, data = status(cli, fleet)
    assert f"store: sha256:{named.name} quarantined" in text
    assert data["quarantined"][0]["digest"] == named.name  # type: ignore[index]


def test_a_rollback_never_writes_back_an_object_that_lost_its_bytes(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.apply()
    kept = fleet.state / "store" / "sha256" / sha(HEALTHY.encode())
    # The new version's health check is a workload that rewrites the store, then fails.
    fleet.strategy("OK = 'v2'\n", health=f"command: [{sys.executable}, -c, "
                   f"\"import os; p = '{kept}'; i = os.stat(p); os.chmod(p, 0o644); "
                   f"open(p, 'wb').write(b'X' * i.st_size); "
                   f"os.utime(p, ns=(i.st_atime_ns, i.st_mtime_ns)); raise SystemExit(1)\"]")
    fleet.commit("v2 with a hostile health check")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == "failed", outcome.message
    assert "StoreObjectMissing" in outcome.message
    delivered = (fleet.root / "app" / "app.py").read_bytes()
    assert b"XXXX" not in delivered, "the tampered bytes never reached the fleet"
    assert not kept.exists() and any((fleet.state / "store" / "quarantine").iterdir())


def test_a_tampered_previous_opponent_is_refetched_or_refused_never_played(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    store = Store(tmp_path / "store", DigestCache())
    previous = store.put(b"previous weights")
    journal.canonical("policy", previous)
    tamper(store.location(previous))
    origin = Origin("x.yaml", "0" * 40, 0, 1)
    gauntlet = build("Gauntlet", {"metadata": {"name": "gate"}, "spec": {"match": {
        "game": "connect4", "games": 40, "opponents": [{"name": "previous",
                                                        "minScore": 0.5}]}}}, origin)
    model: Model = build("Model", {"metadata": {"name": "policy"}, "spec": {
        "targets": ["t"], "artifact": {"uri": "m.pt", "sha256": "0" * 64},
        "pointer": {"path": "p"}, "gauntlet": "gate"}}, origin)
    budgets: dict[str, Budget] = {}
    state = Desired("main@sha1:" + "a" * 40, {}, {}, {}, {"policy": model},
                    {"gate": gauntlet}, budgets, {}, lambda obj: b"", lambda path: b"")
    candidate = store.location(store.put(b"candidate"))
    verdict = GauntletRunner(journal, store).evaluate(model, state, candidate.name, candidate)
    assert (verdict.passed, verdict.reason) == (False, "GauntletError")
    assert "did not match its digest (quarantined)" in verdict.message
    assert journal.gate_verdict(GauntletRunner(journal, store).memo_key(
        model, gauntlet, candidate.name, previous, state)) is None, "nothing remembered"
    assert hashlib.sha256(b"previous weights").hexdigest() == previous
    assert not store.location(previous).exists()
