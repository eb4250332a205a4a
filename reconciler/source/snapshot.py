"""A read-only view of the desired-state folder at one revision.

Paths are POSIX and relative to the folder. Both sources (a Git commit, a plain directory
for pre-commit checks) produce the same entries, so everything downstream is the same.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

EntryKind = Literal["file", "link"]
MAX_LINK_HOPS = 16


@dataclass(frozen=True, slots=True)
class Entry:
    """A file or symlink. ``oid`` is its Git blob id: equal content, equal oid."""

    path: str
    kind: EntryKind
    oid: str
    size: int
    link_target: str | None = None


class Snapshot(Protocol):
    """The folder's files at one revision."""

    @property
    def revision(self) -> str:
        """``branch@sha1:<hex>`` for Git, ``dir:<path>`` for a directory."""

    @property
    def display_prefix(self) -> str:
        """Prepended to folder-relative paths in messages, e.g. ``desired-state/``."""

    def entries(self) -> Mapping[str, Entry]:
        """Every file and symlink under the folder, by relative path."""

    def read(self, entry: Entry) -> bytes:
        """The content of a file entry."""


class PathError(ValueError):
    """A path that is not allowed or leads nowhere; the message says which rule."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


@functools.lru_cache(maxsize=65536)
def normalize(path: str) -> str:
    """A reference from a document, checked to stay inside the folder (pure, so memoized:
    every pass checks the same few thousand references)."""
    if not path or path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise PathError(f"path {path!r} must be relative to the desired-state folder",
                        "path-absolute")
    if "\\" in path:
        raise PathError(f"path {path!r} uses '\\'; write '/'", "path-separator")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathError(f"path {path!r} contains '..'; paths stay inside the desired-state "
                        "folder", "path-escape")
    if not parts:
        raise PathError(f"path {path!r} names the folder itself, not a file", "path-escape")
    return "/".join(parts)


def link_destination(entry: Entry) -> str:
    """Where a symlink entry leads, relative to the folder; PathError if outside it."""
    assert entry.link_target is not None
    target = entry.link_target
    if target.startswith("/"):
        raise PathError(f"symlink {entry.path} -> {target} leads outside the desired-state "
                        "folder", "symlink-escape")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
    if joined == ".." or joined.startswith("../") or joined == ".":
        raise PathError(f"symlink {entry.path} -> {target} leads outside the desired-state "
                        "folder", "symlink-escape")
    return joined


def resolve(entries: Mapping[str, Entry], path: str) -> Entry:
    """The file a reference names, following symlinks that stay inside the folder."""
    current = normalize(path)
    for _ in range(MAX_LINK_HOPS):
        entry = entries.get(current)
        if entry is None:
            raise PathError(f"file {path!r} does not exist in this revision", "file-missing")
        if entry.kind == "file":
            return entry
        current = link_destination(entry)
    raise PathError(f"path {path!r} goes through more than {MAX_LINK_HOPS} symlinks",
                    "symlink-loop")
