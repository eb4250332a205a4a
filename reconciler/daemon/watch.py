"""Trigger a pass when a local repository's refs change (watchfiles).

watchfiles' default filter hides ``.git``; ours keeps only refs, packed-refs and HEAD, and
ignores the ``.lock`` files git writes on the way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, watch


def git_dir(repo: Path) -> Path:
    """The folder holding refs: ``.git`` of a work tree, or a bare repository itself."""
    dotgit = repo / ".git"
    if dotgit.is_file():  # a linked work tree: "gitdir: <path>"
        pointed = Path(dotgit.read_text().split(":", 1)[1].strip())
        common = pointed / "commondir"
        pointed = (pointed / common.read_text().strip()).resolve() if common.exists() else pointed
        return pointed if pointed.is_absolute() else (repo / pointed).resolve()
    return dotgit if dotgit.is_dir() else repo


class RefWatcher:
    def __init__(self, repo: Path, on_change: Callable[[], None], stop: threading.Event) -> None:
        self._root = git_dir(repo)
        self._on_change = on_change
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="ref-watch", daemon=True)

    def _relevant(self, change: Change, path: str) -> bool:
        relative = Path(path).relative_to(self._root).as_posix()
        return not relative.endswith(".lock") and (
            relative.startswith("refs/") or relative in ("packed-refs", "HEAD"))

    def _run(self) -> None:
        for _ in watch(self._root, watch_filter=self._relevant, stop_event=self._stop,
                       debounce=200, step=20, rust_timeout=1000, yield_on_timeout=False,
                       raise_interrupt=False):
            self._on_change()

    def start(self) -> None:
        self._thread.start()
