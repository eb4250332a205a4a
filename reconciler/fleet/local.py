"""A local target: a directory tree on this host. Here: observing it (read-only)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.desired.documents import Target
from reconciler.fleet.digests import DigestCache


@dataclass(frozen=True, slots=True)
class ObservedFile:
    """A delivered file as it is: ``sha256`` None when absent or unreadable (see problem)."""

    path: str
    sha256: str | None
    mode: int | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ObservedPointer:
    """A canonical pointer: ``sha256`` is the store object it names, when it names one that
    exists; ``link`` is the raw symlink text (None when there is no symlink)."""

    path: str
    link: str | None
    sha256: str | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ObservedTarget:
    name: str
    location: str
    files: Mapping[str, ObservedFile]
    pointers: Mapping[str, ObservedPointer]
    error: str | None = None


class LocalFleet:
    """Directory trees under ``fleet_root`` (or absolute roots), pointers into ``store``."""

    def __init__(self, fleet_root: Path, store: Path, digests: DigestCache) -> None:
        self.fleet_root = fleet_root
        self.store = store
        self._digests = digests

    def root_of(self, target: Target) -> Path:
        assert target.local_root is not None
        return self.fleet_root / target.local_root  # an absolute root replaces fleet_root

    def store_path(self, sha256: str) -> Path:
        return self.store / "sha256" / sha256

    def observe(self, target: Target, files: Iterable[str],
                pointers: Iterable[str]) -> ObservedTarget:
        root = self.root_of(target)
        base = str(root) + os.sep  # string joins: pathlib costs more than the stat itself
        return ObservedTarget(target.name, str(root),
                              {path: self._file(base + path, path) for path in files},
                              {path: self._pointer(root, path) for path in pointers})

    def save_digests(self) -> None:
        self._digests.save()

    def read(self, target: Target, path: str) -> bytes | None:
        """Current content of a delivered file, for diffs; None when there is none."""
        try:
            return (self.root_of(target) / path).read_bytes()
        except OSError:
            return None

    def _file(self, full: str, path: str) -> ObservedFile:
        try:
            info = os.stat(full)
        except FileNotFoundError:
            return ObservedFile(path, None)
        except OSError as error:
            return ObservedFile(path, None, problem=f"cannot stat {full}: {error.strerror}")
        if not stat.S_ISREG(info.st_mode):
            return ObservedFile(path, None, problem=f"{full} is not a regular file")
        try:
            digest = self._digests.sha256(full, info)
        except OSError as error:
            return ObservedFile(path, None, problem=f"cannot read {full}: {error.strerror}")
        return ObservedFile(path, digest, stat.S_IMODE(info.st_mode))

    def _pointer(self, root: Path, path: str) -> ObservedPointer:
        full = root / path
        try:
            link = os.readlink(full)
        except FileNotFoundError:
            return ObservedPointer(path, None, None)
        except OSError:
            problem = f"{full} exists but is not a symlink" if full.exists() else None
            return ObservedPointer(path, None, None, problem)
        named = Path(link)
        if named.parent == self.store / "sha256" and named.exists():
            return ObservedPointer(path, link, named.name)
        problem = ("dangling: its target does not exist" if not named.exists()
                   else "points outside the content-addressed store")
        return ObservedPointer(path, link, None, problem)
