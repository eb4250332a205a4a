"""A plain directory as a snapshot: what ``validate DIR`` checks before a commit exists."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from reconciler.source.snapshot import Entry

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

    def __init__(self, root: Path, display_prefix: str) -> None:
        self._root = root
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

    def _scan(self) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        for directory, subdirs, files in os.walk(self._root):
            # Symlinked folders are entries (checked like any link), never descended into.
            linked = [d for d in subdirs if os.path.islink(os.path.join(directory, d))]
            subdirs[:] = sorted(d for d in subdirs if d != ".git" and d not in linked)
            for name in sorted([*files, *linked]):
                full = os.path.join(directory, name)
                relative = Path(full).relative_to(self._root).as_posix()
                info = os.lstat(full)
                if stat.S_ISLNK(info.st_mode):
                    target = os.readlink(full)
                    entries[relative] = Entry(relative, "link", git_blob_id(target.encode()),
                                              len(target), target)
                elif stat.S_ISREG(info.st_mode):
                    entries[relative] = Entry(relative, "file",
                                              _file_blob_id(full, info.st_size), info.st_size)
        return entries
