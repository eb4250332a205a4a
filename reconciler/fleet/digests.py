"""sha256 of files on disk, cached by (device, inode, size, mtime, ctime).

Re-checking an unchanged file costs one ``stat``. A file modified within the last
``RACY_SECONDS`` is hashed but not cached: a write in the same timestamp tick could
otherwise hide behind an identical stat (Git's "racily clean" problem).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
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

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".digests-")
        with os.fdopen(descriptor, "w") as stream:
            json.dump({"format": _FORMAT, "entries": self._entries}, stream)
        os.replace(temporary, self._path)
        self._dirty = False
