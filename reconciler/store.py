"""The content-addressed store: the one owner of ``<stateDir>/store`` and its layout.

::

    sha256/<hex>    objects, read-only once published: a file, or a bundle directory
    partial/        copies and downloads in progress (swept at start)
    quarantine/     objects whose bytes did not match their name, kept for a person to see
    trash/          objects being removed: renamed here first (one atomic step), then deleted

A file existing under a digest's name proves nothing: a workload, repository code or a
careless person can write there. So every use — a flip, a rollback, a restore of preserved
content, the ``previous`` opponent, observing what a pointer names, a revert that skips the
gate — asks :meth:`Store.verified`, which proves the object against its name through the
digest cache (one ``stat`` while nothing changed; a rewrite moves the ctime even when the
mtime is put back). An object that does not match is moved to ``quarantine/``, listed in
:attr:`Store.quarantined` (the pass journals and counts it) and never served: the caller
fetches it again or refuses.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from reconciler.digests import DigestCache, VerificationFailed, sha256_stream, verify_path
from reconciler.errors import StalledError
from reconciler.vocabulary import Reason

_DIGEST = re.compile(r"[0-9a-f]{64}")


class StoreObjectMissing(StalledError):
    """The object a step needs is not in the store (or was quarantined)."""

    reason: str = Reason.STORE_OBJECT_MISSING


def _make_writable(path: Path) -> None:
    """Published objects are read-only, bundle folders included: open them up to delete."""
    if path.is_dir() and not path.is_symlink():
        for folder in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
            os.chmod(folder, 0o755)


class Store:
    """``sha256/<hex>`` objects under ``root``, each proven against its name on use."""

    def __init__(self, root: Path, digests: DigestCache) -> None:
        self.root = root
        self.objects = root / "sha256"
        self._digests = digests
        self.quarantined: list[tuple[str, str]] = []  # (digest, why), until the pass reports

    def location(self, digest: str) -> Path:
        """Where the object lives: what a local pointer links to. Checks nothing."""
        return self.objects / digest

    def named(self, link: str) -> str | None:
        """The digest a pointer's link text names, if it names an object of this store."""
        path = Path(link)
        return path.name if path.parent == self.objects and _DIGEST.fullmatch(path.name) \
            else None

    # Reading: always proven first.

    def verified(self, digest: str) -> Path | None:
        """The object's path if it is there and its bytes match its name; None if absent.
        A mismatch is quarantined (and so becomes absent). Any other OSError (too many open
        files, an I/O error) says nothing about the bytes: it propagates, and the object
        stays where it is for the next try."""
        path = self.location(digest)
        try:
            verify_path(path, digest, self._digests)
        except FileNotFoundError:
            return None
        except VerificationFailed as error:
            self.quarantine(digest, str(error))
            return None
        return path

    def require(self, digest: str) -> Path:
        path = self.verified(digest)
        if path is None:
            raise StoreObjectMissing(f"store object sha256:{digest[:12]} is missing or did not "
                                     "match its digest (see quarantine)")
        return path

    def read(self, digest: str) -> bytes:
        """The bytes of a file object, proven."""
        return self.require(digest).read_bytes()

    # Writing.

    def put(self, content: bytes) -> str:
        """Store bytes under their digest (preserved live content, delivered content)."""
        digest = hashlib.sha256(content).hexdigest()
        if self.verified(digest) is None:
            staged = self.staging(digest)
            with open(staged, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fsync(stream.fileno())
            self.publish(staged, digest, proven=True)
        return digest

    def put_file(self, source: Path) -> str:
        """Store a copy of a file (streamed, never read whole) under its digest."""
        staged = self.staging("copy")
        try:
            shutil.copyfile(source, staged)
            digest = sha256_stream(staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        self.publish(staged, digest, proven=True)
        return digest

    def staging(self, name: str, *, resumable: bool = False) -> Path:
        """A path under ``partial/`` to build an object in: private, or for a download that
        may resume, the same for the same name (until the next start sweeps it)."""
        partial = self.root / "partial"
        partial.mkdir(mode=0o700, parents=True, exist_ok=True)
        return partial / (f"{name}.part" if resumable else f"{name}.{secrets.token_hex(4)}.part")

    def publish(self, staged: Path, digest: str, *, proven: bool = False) -> Path:
        """Prove ``staged`` (a file or bundle folder) is ``digest`` (unless the caller just
        hashed it itself: ``proven``), make it read-only and rename it into place.
        VerificationFailed if it is not; the staged copy is removed either way."""
        try:
            if not proven:
                verify_path(staged, digest)
            for path in [staged, *staged.rglob("*")] if staged.is_dir() else [staged]:
                if not path.is_symlink():
                    os.chmod(path, 0o555 if path.is_dir() else 0o444)
                    _sync(path)  # on disk before a name points at it: a power cut leaves
                    # the old pointer or whole new bytes, never an empty object
            destination = self.location(digest)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if self.verified(digest) is None:
                if destination.is_dir():  # a leftover that could not be renamed over
                    self.remove(digest)
                os.replace(staged, destination)
                _sync_folder(destination.parent)
                if not destination.is_dir():
                    self._digests.record(destination, digest)
            return destination
        finally:
            self._discard(staged)

    def remove(self, digest: str) -> None:
        """Rename the object aside (atomic), then delete it: a crash in between leaves a
        trash entry that the next start sweeps, never a half-deleted object."""
        self._move_aside(digest, "trash")
        self._empty("trash")

    def quarantine(self, digest: str, why: str) -> None:
        if self._move_aside(digest, "quarantine"):
            self.quarantined.append((digest, why))

    def sweep(self) -> None:
        """At start: what a crash left in ``partial/`` and ``trash/`` goes."""
        self._empty("partial")
        self._empty("trash")

    def save_digests(self) -> None:
        self._digests.save()

    def _move_aside(self, digest: str, folder: str) -> bool:
        source = self.location(digest)
        aside = self.root / folder
        aside.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.replace(source, aside / f"{digest}.{secrets.token_hex(4)}")
        except FileNotFoundError:
            return False
        return True

    def _empty(self, folder: str) -> None:
        for entry in (self.root / folder).glob("*") if (self.root / folder).is_dir() else ():
            self._discard(entry)

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            _make_writable(path)
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
