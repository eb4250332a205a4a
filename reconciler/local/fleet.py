"""Local targets: directory trees on this host, observed by digest; pointers are symlinks
into the content-addressed store (which this fleet is given, never builds).

Every change is atomic: a file is written to a temporary name in its own folder, synced
and renamed over the old one; a pointer is a temporary symlink renamed over the old one.
A crash leaves the old or the new content, never a torn file or a dangling pointer.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from reconciler.desired.documents import Target
from reconciler.digests import DigestCache
from reconciler.local.place import LocalPlace
from reconciler.places import ContentStore
from reconciler.plan.observed import ObservedFile, ObservedPointer, ObservedTarget


class LocalFleet:
    """Directory trees under ``fleet_root`` (or absolute roots), pointers into ``store``."""

    def __init__(self, fleet_root: Path, store: ContentStore, digests: DigestCache, *,
                 run_as: str | None = None) -> None:
        self.fleet_root = fleet_root
        self.store = store
        self.run_as = run_as  # who commands run as when a Target does not say
        self._digests = digests

    def root_of(self, target: Target) -> Path:
        assert target.local_root is not None
        return self.fleet_root / target.local_root  # an absolute root replaces fleet_root

    def place(self, target: Target) -> LocalPlace:
        return LocalPlace(self, target)

    def observe(self, target: Target, files: Iterable[str],
                pointers: Iterable[str]) -> ObservedTarget:
        root = self.root_of(target)
        base = str(root) + os.sep  # string joins: pathlib costs more than the stat itself
        return ObservedTarget(target.name, str(root),
                              {path: self._file(base + path, path) for path in files},
                              {path: self.pointer(target, path) for path in pointers})

    def finish_observing(self) -> None:
        self._digests.save()

    def preserve(self, target: Target, path: str) -> str | None:
        """Keep the live content in the store, so it can come back; its digest, or None."""
        try:
            content = (self.root_of(target) / path).read_bytes()
        except FileNotFoundError:
            return None
        return self.store.put(content)

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
        """Point ``path`` at the (verified) store object ``digest`` in one rename."""
        self.point(target, path, str(self.store.require(digest)))

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

    def pointer(self, target: Target, path: str) -> ObservedPointer:
        """What a pointer names: a digest only for a store object that verifies."""
        full = self.root_of(target) / path
        try:
            link = os.readlink(full)
        except FileNotFoundError:
            return ObservedPointer(path, None, None)
        except OSError:
            problem = f"{full} exists but is not a symlink" if full.exists() else None
            return ObservedPointer(path, None, None, problem)
        digest = self.store.named(link)
        if not Path(link).exists():
            return ObservedPointer(path, link, None, "dangling: its target does not exist")
        if digest is None:
            return ObservedPointer(path, link, None,
                                   "points outside the content-addressed store")
        if self.store.verified(digest) is None:
            return ObservedPointer(path, link, None, f"names sha256:{digest[:12]}, whose "
                                   "bytes did not match its digest (quarantined)")
        return ObservedPointer(path, link, digest)


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
