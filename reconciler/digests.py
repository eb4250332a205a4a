"""Proving digests: sha256 of files and of directory bundles, cached by stat.

A digest of a file on disk is cached by (device, inode, size, mtime, ctime): re-checking an
unchanged file costs one ``stat``. A file modified within the last ``RACY_SECONDS`` is hashed
but not cached: a write in the same timestamp tick could otherwise hide behind an identical
stat (Git's "racily clean" problem). Restoring an mtime by hand does not hide a change: the
ctime moves with every write.

A bundle is a directory holding ``manifest.json``::

    {"files": {"router_head.safetensors": {"sha256": "<hex>", "size": 1234}, ...}}

The bundle's digest, the one pinned in Git, is the sha256 of ``manifest.json``. A bundle
verifies when every listed file is there with its size and sha256, nothing else is there,
and no symlink leads out of it. Files are hashed in parallel (hashlib releases the GIL).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RACY_SECONDS = 2.0
_FORMAT = 1


def _stat_key(info: os.stat_result) -> list[int]:
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


class DigestCache:
    """Digests by absolute path; an entry counts only while the file's stat is unchanged."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._entries: dict[str, list[int | str]] = {}
        self._dirty = False
        self._lock = threading.Lock()  # bundle files are hashed from several threads
        if path is not None:
            try:
                stored = json.loads(path.read_bytes())
                if stored.get("format") == _FORMAT:
                    self._entries = stored["entries"]
            except (OSError, ValueError, KeyError, AttributeError):
                pass  # only a cache

    def sha256(self, path: str | Path, info: os.stat_result | None = None,
               hasher: Callable[[Path], str] | None = None) -> str:
        """The digest of the regular file at ``path`` (OSError if it cannot be read);
        ``hasher`` computes it on a miss (to report progress on a large file)."""
        info = info or os.stat(path)
        key = _stat_key(info)
        name = os.fspath(path)
        cached = self._entries.get(name)
        if cached is not None and cached[:5] == key:
            return str(cached[5])
        if hasher is not None:
            digest = hasher(Path(path))
        else:
            with open(path, "rb") as stream:
                digest = hashlib.file_digest(stream, "sha256").hexdigest()
        if time.time() - info.st_mtime_ns / 1e9 > RACY_SECONDS:
            with self._lock:
                self._entries[name] = [*key, digest]
                self._dirty = True
        return digest

    def record(self, path: Path, digest: str) -> None:
        """Remember a digest this process just computed for ``path`` while writing it (the
        store publishing an object), so its first use does not hash it again."""
        key = _stat_key(os.stat(path))
        with self._lock:
            self._entries[os.fspath(path)] = [*key, digest]
            self._dirty = True

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".digests-")
        with os.fdopen(descriptor, "w") as stream:
            json.dump({"format": _FORMAT, "entries": self._entries}, stream)
        os.replace(temporary, self._path)
        self._dirty = False


MANIFEST = "manifest.json"
CHUNK = 1 << 20
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class VerificationFailed(Exception):
    """The artifact is not what the repository declares; the message says how."""


def sha256_stream(path: Path, progress: Progress | None = None, total: int = 0) -> str:
    """sha256 of a file, read in 1 MiB chunks, reporting progress as it goes."""
    digest = hashlib.sha256()
    done = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while read := stream.readinto(buffer):
            digest.update(view[:read])
            done += read
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, cache: DigestCache | None = None,
                progress: Progress | None = None) -> None:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise VerificationFailed(f"{path} is not a regular file")
    if cache is not None:
        actual = cache.sha256(path, info, lambda p: sha256_stream(p, progress, info.st_size))
    else:
        actual = sha256_stream(path, progress, info.st_size)
    if actual != expected:
        raise VerificationFailed(f"{path}: sha256 is {actual}, expected {expected}")


def _listing(root: Path) -> dict[str, Path]:
    """Every file in the bundle by relative path; links must stay inside."""
    found: dict[str, Path] = {}
    for directory, subdirs, files in os.walk(root):
        for name in [*files, *[d for d in subdirs if os.path.islink(os.path.join(directory, d))]]:
            full = Path(directory) / name
            relative = full.relative_to(root).as_posix()
            if full.is_symlink():
                target = full.resolve()
                if target != root.resolve() and root.resolve() not in target.parents:
                    raise VerificationFailed(f"{relative} is a symlink leading out of the "
                                             f"bundle (to {os.readlink(full)})")
            found[relative] = full
    return found


def verify_bundle(root: Path, expected: str, cache: DigestCache | None = None,
                  progress: Progress | None = None, workers: int = 0) -> None:
    """Manifest digest, then every file against it, in parallel."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise VerificationFailed(f"{root} has no {MANIFEST}")
    verify_file(manifest_path, expected, cache)
    try:
        listed = json.loads(manifest_path.read_bytes())["files"]
        wanted = {name: (entry["sha256"], int(entry["size"])) for name, entry in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise VerificationFailed(f"{manifest_path} is not a valid manifest: {error}") from None
    present = _listing(root)
    present.pop(MANIFEST, None)
    missing = sorted(set(wanted) - set(present))
    extra = sorted(set(present) - set(wanted))
    if missing or extra:
        raise VerificationFailed("bundle does not match its manifest: "
                                 + "; ".join(filter(None, [
                                     f"missing {', '.join(missing)}" if missing else "",
                                     f"not listed {', '.join(extra)}" if extra else ""])))
    total = sum(size for _, size in wanted.values())
    done = 0
    counting = threading.Lock()

    def one(name: str) -> None:
        nonlocal done
        digest, size = wanted[name]
        path = present[name]
        if os.stat(path).st_size != size:
            raise VerificationFailed(f"{name}: size is {os.stat(path).st_size}, the manifest "
                                     f"says {size}")
        verify_file(path, digest, cache)
        with counting:
            done += size
            if progress is not None:
                progress(done, total)

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for future in [pool.submit(one, name) for name in sorted(wanted)]:
            future.result()


def verify_path(path: Path, expected: str, cache: DigestCache | None = None,
                progress: Progress | None = None) -> str:
    """Verify a file or bundle; returns which it was."""
    if path.is_dir():
        verify_bundle(path, expected, cache, progress)
        return "bundle"
    verify_file(path, expected, cache, progress)
    return "file"


def write_manifest(root: Path) -> str:
    """Describe a directory as a bundle; returns the digest to pin in Git."""
    files = {name: {"sha256": sha256_stream(path), "size": path.stat().st_size}
             for name, path in sorted(_listing(root).items()) if name != MANIFEST}
    body = (json.dumps({"files": files}, indent=2, sort_keys=True) + "\n").encode()
    (root / MANIFEST).write_bytes(body)
    return hashlib.sha256(body).hexdigest()
