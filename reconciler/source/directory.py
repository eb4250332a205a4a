"""A plain directory as a snapshot: what ``validate DIR`` checks before a commit exists."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from reconciler.source.snapshot import DEFAULT_TREE_LIMITS, Entry, TreeBudget, TreeLimits

_CHUNK = 1 << 20


def git_blob_id(content: bytes) -> str:
    """The id Git gives this content, so a directory and a commit of it share cache keys."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


def _file_blob_id(path: str, size: int) -> str:
    digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DirectorySnapshot:
    """Files under ``root`` as they are on disk now. ``.git`` folders are skipped."""

    def __init__(self, root: Path, display_prefix: str,
                 limits: TreeLimits = DEFAULT_TREE_LIMITS) -> None:
        self._root = root
        self._limits = limits
        self._prefix = display_prefix
        self._entries: dict[str, Entry] | None = None

    @property
    def revision(self) -> str:
        return f"dir:{self._root}"

    @property
    def display_prefix(self) -> str:
        return self._prefix

    def entries(self) -> Mapping[str, Entry]:
        if self._entries is None:
            self._entries = self._scan()
        return self._entries

    def read(self, entry: Entry) -> bytes:
        return (self._root / entry.path).read_bytes()

    def copy_to(self, entry: Entry, destination: Path) -> None:
        shutil.copyfile(self._root / entry.path, destination)

    def _scan(self) -> dict[str, Entry]:
        """A loop over a stack of folders (``os.walk`` recurses), bounded by the tree
        limits before a file is read to compute its blob id."""
        budget = TreeBudget(self._limits, self._prefix)
        entries: dict[str, Entry] = {}
        pending: list[tuple[str, str, int]] = [(str(self._root), "", 1)]
        while pending:
            directory, prefix, depth = pending.pop()
            budget.folder(prefix, depth)
            with os.scandir(directory) as listing:
                found = sorted(listing, key=lambda item: item.name)
            for item in found:
                relative = prefix + item.name
                info = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    if item.name != ".git":
                        pending.append((item.path, relative + "/", depth + 1))
                elif stat.S_ISLNK(info.st_mode):
                    # Symlinked folders are entries (checked like any link), never descended.
                    target = os.readlink(item.path)
                    budget.link(relative, len(target))
                    entries[relative] = Entry(relative, "link", git_blob_id(target.encode()),
                                              len(target), target)
                elif stat.S_ISREG(info.st_mode):
                    budget.entry(relative, info.st_size)
                    entries[relative] = Entry(relative, "file",
                                              _file_blob_id(item.path, info.st_size),
                                              info.st_size)
        return dict(sorted(entries.items()))
