"""Local targets: directory trees under the fleet root (or an allowed root), observed by
digest; pointers are symlinks into the content-addressed store (which this fleet is given,
never builds).

Every change is atomic: a file is written to a temporary name in its own folder, synced
and renamed over the old one; a pointer is a temporary symlink renamed over the old one.
A crash leaves the old or the new content, never a torn file or a dangling pointer.

Workloads share the roots, so nothing under a root is trusted: every read and write goes
through a descriptor of the root's base and resolves the rest without following links
(``beneath.py``). A symlink where a delivered file or a folder belongs is drift: observing
reports it (the file reads as absent, with a problem), delivering replaces the link, and
what it points at is never read, shown in a diff or copied into the store.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from reconciler.desired.documents import Target
from reconciler.digests import CHUNK, DigestCache
from reconciler.local import beneath
from reconciler.local.place import LocalPlace
from reconciler.local.roots import split_root
from reconciler.places import ContentStore
from reconciler.plan.observed import ObservedFile, ObservedPointer, ObservedTarget

_READ = os.O_RDONLY | os.O_NONBLOCK  # a FIFO planted where a file belongs must not block


class LocalFleet:
    """Directory trees under ``fleet_root`` or ``allowed_roots``, pointers into ``store``."""

    def __init__(self, fleet_root: Path, store: ContentStore, digests: DigestCache,
                 allowed_roots: Sequence[Path] = (), *, run_as: str | None = None,
                 log_roots: Sequence[Path] = ()) -> None:
        self.fleet_root = fleet_root
        self.allowed_roots = tuple(allowed_roots)
        self.log_roots = tuple(log_roots)  # where log checks may read besides a root
        self.store = store
        self.run_as = run_as  # who commands run as when a Target does not say
        self._digests = digests
        # Descriptors of the bases, opened once: a base moved away keeps being the folder
        # this fleet acts on (the fleet lock notices the move and stops the daemon).
        self._bases: dict[Path, int] = {}
        weakref.finalize(self, _close_all, self._bases)  # a fleet per command, or per test
        self._splits: dict[str, tuple[Path, str]] = {}  # root -> (base, beneath): roots.py

    def root_of(self, target: Target) -> Path:
        assert target.local_root is not None
        return self.fleet_root / target.local_root  # an absolute root replaces fleet_root

    def place(self, target: Target) -> LocalPlace:
        return LocalPlace(self, target)

    def _anchor(self, target: Target, *, create: bool) -> tuple[int, str]:
        """(descriptor of the root's base, the root's path beneath it). Without ``create``,
        FileNotFoundError while the base does not exist yet."""
        assert target.local_root is not None
        split = self._splits.get(target.local_root)
        if split is None:
            split = split_root(target.local_root, self.fleet_root, self.allowed_roots)
            self._splits[target.local_root] = split
        base, relative = split
        descriptor = self._bases.get(base)
        if descriptor is None:
            if create:
                base.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._bases[base] = descriptor
        return descriptor, relative

    def _open(self, target: Target, path: str, flags: int) -> int:
        base, relative = self._anchor(target, create=False)
        return beneath.open_beneath(base, _join(relative, path), flags)

    def open_log(self, target: Target, path: str) -> int:
        """A log file beneath the target's root, for reading (no link followed)."""
        return self._open(target, path, _READ | os.O_CLOEXEC)

    def _folder(self, target: Target, path: str) -> int:
        """The folder at ``path`` in the root, made (and links on the way replaced)."""
        base, relative = self._anchor(target, create=True)
        return beneath.folder(base, _join(relative, path))

    def ensure_root(self, target: Target,
                    group: Callable[[], int | None] = lambda: None) -> None:
        """The root as a real folder (commands run in it, files land in it). One made here
        (absent, or a link where it belongs) goes to ``group()``, asked only then (a runAs
        user's group), setgid, mode 2775; by descriptor, never by a path a link could
        redirect."""
        try:
            os.close(self._open(target, "", os.O_RDONLY | os.O_DIRECTORY))
            return
        except OSError:
            pass  # not there yet, or not a real folder: made below
        descriptor = self._folder(target, "")
        try:
            shared = group()
            if shared is not None:
                os.fchown(descriptor, -1, shared)
                os.fchmod(descriptor, 0o2775)
        finally:
            os.close(descriptor)

    def observe(self, target: Target, files: Iterable[str],
                pointers: Iterable[str]) -> ObservedTarget:
        root = self.root_of(target)
        base = str(root) + os.sep  # string joins: pathlib costs more than the stat itself
        return ObservedTarget(target.name, str(root),
                              {path: self._file(target, base + path, path) for path in files},
                              {path: self.pointer(target, path) for path in pointers})

    def finish_observing(self) -> None:
        self._digests.save()

    def preserve(self, target: Target, path: str) -> str | None:
        """Keep the live content in the store, so it can come back; its digest, or None
        when there is no regular file there (a link is not content)."""
        try:
            descriptor = self._open(target, path, _READ)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                return None
            return _store_copy(self.store, descriptor)
        finally:
            os.close(descriptor)

    # Changes to a target.

    def write(self, target: Target, path: str, content: bytes, mode: int | None) -> None:
        """Atomically replace the file; an existing file keeps its permissions."""
        folder, name = beneath.split(path)
        parent = self._folder(target, folder)
        try:
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    mode = stat.S_IMODE(info.st_mode)
            except FileNotFoundError:
                pass
            _write_atomic(parent, name, content, 0o644 if mode is None else mode)
        finally:
            os.close(parent)

    def remove(self, target: Target, path: str) -> None:
        folder, name = beneath.split(path)
        try:
            parent = self._open(target, folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return  # no folder of ours there, so no file of ours either
            raise
        try:
            os.unlink(name, dir_fd=parent)
            os.fsync(parent)
        except FileNotFoundError:
            return
        finally:
            os.close(parent)

    def flip(self, target: Target, path: str, digest: str) -> None:
        """Point ``path`` at the (verified) store object ``digest`` in one rename."""
        self.point(target, path, str(self.store.require(digest)))

    def point(self, target: Target, path: str, link: str | None) -> None:
        """Set the pointer to ``link`` exactly (None removes it): how a flip is undone."""
        if link is None:
            self.remove(target, path)
            return
        folder, name = beneath.split(path)
        parent = self._folder(target, folder)
        try:
            temporary = f".{name}.flip-{secrets.token_hex(4)}"
            os.symlink(link, temporary, dir_fd=parent)
            try:
                os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                os.unlink(temporary, dir_fd=parent)
                raise
            os.fsync(parent)
        finally:
            os.close(parent)

    def read(self, target: Target, path: str) -> bytes | None:
        """Current content of a delivered file, for diffs; None when there is none (a link
        is not content: what it points at is never shown)."""
        try:
            descriptor = self._open(target, path, _READ)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                return None
            with open(descriptor, "rb", closefd=False) as stream:
                return stream.read()
        except OSError:
            return None
        finally:
            os.close(descriptor)

    def _file(self, target: Target, full: str, path: str) -> ObservedFile:
        try:
            descriptor = self._open(target, path, _READ)
        except FileNotFoundError:
            return ObservedFile(path, None)
        except OSError as error:
            return ObservedFile(path, None, problem=_problem(full, error))
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                return ObservedFile(path, None, problem=f"{full} is not a regular file")
            digest = self._digests.sha256(full, info,
                                          hasher=lambda _: _sha256_of(descriptor))
        except OSError as error:
            return ObservedFile(path, None, problem=f"cannot read {full}: {error.strerror}")
        finally:
            os.close(descriptor)
        return ObservedFile(path, digest, stat.S_IMODE(info.st_mode))

    def pointer(self, target: Target, path: str) -> ObservedPointer:
        """What a pointer names: a digest only for a store object that verifies."""
        full = self.root_of(target) / path
        folder, name = beneath.split(path)
        try:
            parent = self._open(target, folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return ObservedPointer(path, None, None)
        except OSError as error:
            return ObservedPointer(path, None, None, _problem(str(full), error))
        try:
            link = os.readlink(name, dir_fd=parent)
        except FileNotFoundError:
            return ObservedPointer(path, None, None)
        except OSError:
            return ObservedPointer(path, None, None, f"{full} exists but is not a symlink")
        finally:
            os.close(parent)
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


def _close_all(descriptors: dict[Path, int]) -> None:
    for descriptor in descriptors.values():
        os.close(descriptor)
    descriptors.clear()


def _join(relative: str, path: str) -> str:
    return f"{relative}/{path}" if relative else path


def _problem(full: str, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return (f"{full}: a symlink where a file or folder belongs (drift: it is replaced, "
                "never followed)")
    if error.errno == errno.EXDEV:
        return f"{full} leads out of its root"
    if error.errno == errno.ENOTDIR:
        return f"{full}: a file where a folder belongs"
    return f"cannot open {full}: {error.strerror}"


def _sha256_of(descriptor: int) -> str:
    os.lseek(descriptor, 0, os.SEEK_SET)
    with open(descriptor, "rb", closefd=False) as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _store_copy(store: ContentStore, descriptor: int) -> str:
    """Copy the open file into the store, streamed and hashed on the way: the bytes stored
    are the bytes of this descriptor, whatever happens to the path meanwhile."""
    staged = store.staging("copy")
    digest = hashlib.sha256()
    try:
        with open(descriptor, "rb", closefd=False) as source, open(staged, "wb") as copy:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                copy.write(chunk)
            copy.flush()
            os.fsync(copy.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    store.publish(staged, digest.hexdigest(), proven=True)
    return digest.hexdigest()


def _write_atomic(parent: int, name: str, content: bytes, mode: int) -> None:
    """Temp file in the same folder, fsync, rename over ``name`` (a link there is replaced,
    never written through), fsync the folder: all by the folder's descriptor."""
    temporary = f".{name}.new-{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600, dir_fd=parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=parent)
        raise
    os.fsync(parent)
