"""The real daemon, killed by ``SIGKILL`` at one exact point no outside timing can hit
reliably: half-way through removing a store object (renamed into ``trash/``, not yet
deleted), the first time ``PLANTED_KILL_IN_REMOVAL`` exists in the state dir."""

from __future__ import annotations

import os
import signal
import sys

from reconciler.cli import main
from reconciler.store import Store

_empty = Store._empty


def empty(self: Store, folder: str) -> None:
    flag = self.root.parent / "PLANTED_KILL_IN_REMOVAL"
    trash = self.root / "trash"
    if folder == "trash" and flag.exists() and trash.is_dir() and any(trash.iterdir()):
        flag.unlink()
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9, between the rename and the delete
    _empty(self, folder)


Store._empty = empty  # type: ignore[method-assign]
sys.exit(main(sys.argv[1:]))
