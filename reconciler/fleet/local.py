"""A local target: a directory tree on this host, and the content-addressed store that
canonical pointers lead into.

Every change is atomic: a file is written to a temporary name in its own folder, synced
and renamed over the old one; a pointer is a temporary symlink renamed over the old one.
A crash leaves the old or the new content, never a torn file or a dangling pointer.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    """What a target holds. ``managed``: on Kubernetes, the ConfigMaps we manage there and
    the keys we wrote in each (what ``prune`` may delete). ``transient``: the error is an
    outage worth retrying with backoff, not something a person must fix."""

    name: str
    location: str
    files: Mapping[str, ObservedFile]
    pointers: Mapping[str, ObservedPointer]
    error: str | None = None
    transient: bool = False
    managed: Mapping[str, frozenset[str]] = field(default_factory=dict)


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

    # The content-addressed store: sha256/<hex>, read-only once written.

    def store_has(self, digest: str) -> bool:
        return self.store_path(digest).is_file()

    def store_read(self, digest: str) -> bytes:
        return self.store_path(digest).read_bytes()

    def store_put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        if not self.store_has(digest):
            _write_atomic(self.store_path(digest), content, 0o444)
        return digest

    def store_remove(self, digest: str) -> None:
        """Remove a store object (a read-only file or bundle directory)."""
        path = self.store_path(digest)
        if path.is_dir():
            for folder in [path, *(p for p in path.rglob("*") if p.is_dir())]:
                os.chmod(folder, 0o755)
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def preserve(self, target: Target, path: str) -> str | None:
        """Keep the live content in the store, so it can come back; its digest, or None."""
        try:
            content = (self.root_of(target) / path).read_bytes()
        except FileNotFoundError:
            return None
        return self.store_put(content)

    # Changes to a target.

    def write(self, target: Target, path: str, content: bytes, mode: int | None) -> None:
        """Atomically replace the file; an existing file keeps its permissions."""
        full = self.root_of(target) / path
        try:
            mode = stat.S_IMODE(os.stat(full).st_mode)
        except FileNotFoundError:
            mode = 0o644 if mode is None else mode
        _write_atomic(full, content, mode)

    def remove(self, target: Target, path: str) -> None:
        full = self.root_of(target) / path
        try:
            full.unlink()
        except FileNotFoundError:
            return
        _sync_folder(full.parent)

    def flip(self, target: Target, path: str, digest: str) -> None:
        """Point ``path`` at the store object ``digest`` in one rename."""
        self.point(target, path, str(self.store_path(digest)))

    def point(self, target: Target, path: str, link: str | None) -> None:
        """Set the pointer to ``link`` exactly (None removes it): how a flip is undone."""
        full = self.root_of(target) / path
        if link is None:
            self.remove(target, path)
            return
        full.parent.mkdir(parents=True, exist_ok=True)
        temporary = full.parent / f".{full.name}.flip-{secrets.token_hex(4)}"
        os.symlink(link, temporary)
        os.replace(temporary, full)
        _sync_folder(full.parent)

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


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomic(full: Path, content: bytes, mode: int) -> None:
    full.parent.mkdir(parents=True, exist_ok=True)
    temporary = full.parent / f".{full.name}.new-{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(temporary, full)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(full.parent)
