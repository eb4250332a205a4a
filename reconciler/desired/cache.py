"""Results that depend only on content, keyed by Git blob id (or a digest of their inputs).

An unchanged file is never parsed or schema-checked twice, an unchanged strategy never
re-imported, and the cache survives restarts in the state dir. The salt (schema digest,
reconciler version, limits) retires every entry at once when the rules change.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

_FORMAT = 1


class DesiredCache:
    """Three JSON-able tables: loaded files, content digests, check outcomes."""

    def __init__(self, salt: str, path: Path | None = None) -> None:
        self._salt = salt
        self._path = path
        self.files: dict[str, dict[str, Any]] = {}
        self.digests: dict[str, str] = {}
        self.checks: dict[str, list[list[Any]]] = {}
        self._dirty = False
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            stored = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return  # absent or damaged: start empty, it is only a cache
        if not isinstance(stored, dict) or stored.get("format") != _FORMAT \
                or stored.get("salt") != self._salt:
            return
        self.files = stored.get("files", {})
        self.digests = stored.get("digests", {})
        self.checks = stored.get("checks", {})

    def mark_dirty(self) -> None:
        self._dirty = True

    def save(self) -> None:
        """Write atomically, and only when something was added."""
        if self._path is None or not self._dirty:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"format": _FORMAT, "salt": self._salt, "files": self.files,
                           "digests": self.digests, "checks": self.checks},
                          separators=(",", ":"))
        descriptor, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".cache-")
        try:
            with os.fdopen(descriptor, "w") as stream:
                stream.write(body)
            os.replace(temporary, self._path)
        except BaseException:
            os.unlink(temporary)
            raise
        self._dirty = False
