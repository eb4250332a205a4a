"""The real daemon with planted defects, for tests of what no input should ever do: a step
that raises an exception nobody expected (content starting with ``EXPLODE``), and a journal
that refuses once as a full disk would (the first time ``PLANTED_FULL_DISK`` exists)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import main
from reconciler.journal import Journal
from reconciler.local.place import LocalPlace

_write = LocalPlace.write
_history = Journal.history


def write(self: LocalPlace, address: str, content: bytes, mode: int | None,
          revision: str) -> None:
    if content.startswith(b"EXPLODE"):
        raise ZeroDivisionError("planted defect")
    _write(self, address, content, mode, revision)


def history(self: Journal, now: float) -> Any:
    flag = Path(self.path.parent / "PLANTED_FULL_DISK")
    if flag.exists():
        flag.unlink()
        raise sqlite3.OperationalError("database or disk is full")
    return _history(self, now)


LocalPlace.write = write  # type: ignore[method-assign]
Journal.history = history  # type: ignore[method-assign]
sys.exit(main(sys.argv[1:]))
