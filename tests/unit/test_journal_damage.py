"""A damaged journal is told apart from a busy or full one: damage needs a person (the
file moved aside), a refusal passes by itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from reconciler.errors import Disposition, classify
from reconciler.journal import Journal, JournalCorrupt


def _damaged(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    Journal(path).close()
    path.write_bytes(b"\x00" * 100 + path.read_bytes()[100:])  # the header, gone
    return path


def test_a_damaged_file_is_refused_at_open_with_the_recovery(tmp_path: Path) -> None:
    path = _damaged(tmp_path)
    for readonly in (False, True):
        with pytest.raises(JournalCorrupt, match="move it aside") as raised:
            Journal(path, readonly=readonly)
        assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    assert path.read_bytes()[:100] == b"\x00" * 100, "a damaged file is never written to"


def test_damage_found_mid_run_stalls_while_a_refusal_is_transient(tmp_path: Path) -> None:
    database = sqlite3.connect(_damaged(tmp_path))
    with pytest.raises(sqlite3.DatabaseError) as damage:
        database.execute("SELECT * FROM events").fetchall()
    outcome = classify(damage.value)
    assert (outcome.disposition, outcome.reason) == (Disposition.STALLED, "JournalCorrupt")
    full = classify(sqlite3.OperationalError("database or disk is full"))
    assert (full.disposition, full.reason) == (Disposition.TRANSIENT, "JournalUnavailable")
