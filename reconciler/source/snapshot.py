"""A read-only view of the desired-state folder at one revision.

Paths are POSIX and relative to the folder. Both sources (a Git commit, a plain directory
for pre-commit checks) produce the same entries, so everything downstream is the same.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from reconciler.diagnostics import Diagnostic, InvalidInput

EntryKind = Literal["file", "link"]
MAX_LINK_HOPS = 16


@dataclass(frozen=True, slots=True)
class TreeLimits:
    """What walking the desired-state folder may cost: both sources walk it in a loop with
    these bounds, so a hostile tree (1,500 nested folders, a million files, a huge blob)
    ends in one diagnostic, never a RecursionError or an exhausted host. Far above any
    real desired state; a model artifact kept in the repository must fit ``max_file_bytes``.
    """

    max_depth: int = 32
    max_entries: int = 20_000
    max_file_bytes: int = 1 << 30
    max_total_bytes: int = 4 << 30
    max_link_bytes: int = 4096  # a symlink's target is read whole: PATH_MAX bounds it


DEFAULT_TREE_LIMITS = TreeLimits()


class TreeBudget:
    """Counts a walk against the limits: the first excess raises InvalidInput naming the
    file (with ``display_prefix``) and the rule, as any invalid desired state does."""

    def __init__(self, limits: TreeLimits, display_prefix: str) -> None:
        self.limits = limits
        self._prefix = display_prefix
        self._entries = 0
        self._bytes = 0

    def _refuse(self, path: str, message: str, rule: str) -> InvalidInput:
        return InvalidInput([Diagnostic(self._prefix + path, 1, 1, message, rule)])

    def folder(self, path: str, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise self._refuse(path.rstrip("/"), f"folders nest {depth} deep here, over the "
                               f"limit of {self.limits.max_depth}", "tree-depth")

    def link(self, path: str, size: int) -> None:
        if size > self.limits.max_link_bytes:
            raise self._refuse(path, f"symlink target is {size} bytes, over the limit of "
                               f"{self.limits.max_link_bytes}", "tree-link-size")
        self.entry(path, size)

    def entry(self, path: str, size: int) -> None:
        self._entries += 1
        self._bytes += size
        if self._entries > self.limits.max_entries:
            raise self._refuse(path, f"the folder holds more than {self.limits.max_entries} "
                               "files", "tree-entries")
        if size > self.limits.max_file_bytes:
            raise self._refuse(path, f"file is {size} bytes, over the limit of "
                               f"{self.limits.max_file_bytes}", "tree-file-size")
        if self._bytes > self.limits.max_total_bytes:
            raise self._refuse(path, f"the folder's files add up to more than "
                               f"{self.limits.max_total_bytes} bytes", "tree-total-size")


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
        """The content of a file entry (whole: for files the limits keep small)."""

    def copy_to(self, entry: Entry, destination: Path) -> None:
        """Write a file entry's content to ``destination`` in chunks, never holding it
        whole in memory: for files that may be large (modules copied for a check,
        artifacts kept in the repository)."""


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
