"""Where a local Target's root may be: inside the fleet root or an allowed root, clear of
the daemon's own files and of every other Target's root.

A root comes from the repository, which is untrusted: ``local: {root: ../store/sha256}``
would let a Config be "delivered" as a store object under a pinned digest's name, and a
root of ``"."`` over the state dir would let one replace the journal. The bases (the
settings' ``fleetRoot`` and ``allowedRoots``) come from the operator and are trusted,
symlinks in their own paths included; what a root adds to its base is resolved
lexically here and, on the host, beneath the base's descriptor without following links
(``beneath.py``), so the two agree on where a root is.

The rules need the settings, so they run where the settings are known: in every pass after
the desired state loads (``passes.load``) and in ``reconciler validate`` with settings.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from reconciler.desired.documents import Desired, Target
from reconciler.desired.locate import Locator
from reconciler.diagnostics import Diagnostic
from reconciler.settings import Settings

ROOT_FIELD = ("spec", "local", "root")


class RootOutside(OSError):
    """A root that is in none of the bases: validation refuses it; the fleet never acts."""


def split_root(root: str, fleet_root: Path, allowed_roots: Sequence[Path]) -> tuple[Path, str]:
    """The trusted base a root lies in and the path beneath it ('' for the base itself). A
    relative root is relative to the fleet root; an absolute one must lie in a base."""
    wanted = os.path.normpath(os.path.join(os.path.abspath(fleet_root), root))
    for base in (fleet_root, *allowed_roots):
        start = os.path.normpath(os.path.abspath(base))
        if wanted == start:
            return base, ""
        if wanted.startswith(start.rstrip("/") + "/"):
            return base, wanted[len(start.rstrip("/")) + 1:]
    raise RootOutside(errno.EXDEV, f"{wanted}, outside the fleet root {fleet_root}"
                      + (" and the allowed roots" if allowed_roots else ""))


def _contains(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _overlap(one: str, other: str) -> bool:
    return _contains(one, other) or _contains(other, one)


def owned_paths(settings: Settings) -> list[Path]:
    """What the daemon keeps in its state dir and no target may reach."""
    journal = settings.journal_path
    return [journal, journal.with_name(journal.name + "-wal"),
            journal.with_name(journal.name + "-shm"), settings.mirror_dir, settings.cache_dir,
            settings.store_dir, settings.state_dir / "daemon.json"]


def root_problems(targets: Sequence[Target], settings: Settings) -> Iterator[tuple[Target, str,
                                                                                  str]]:
    """(target, message, rule) for each broken rule, targets in name order."""
    state = os.path.realpath(settings.state_dir)
    owned = [os.path.realpath(path) for path in owned_paths(settings)]
    placed: list[tuple[str, Target]] = []
    for target in sorted(targets, key=lambda t: t.name):
        if target.local_root is None:
            continue
        shown = repr(target.local_root)
        try:
            base, beneath = split_root(target.local_root, settings.fleet_root,
                                       settings.allowed_roots)
        except RootOutside as error:
            yield (target, f"local root {shown} resolves to {error.strerror}; a Target's root must "
                   "lie inside the fleet root (or a folder in the settings' allowedRoots)",
                   "root-escape")
            continue
        real = os.path.normpath(os.path.join(os.path.realpath(base), beneath))
        if _contains(real, state) or any(_overlap(real, own) for own in owned):
            yield (target, f"local root {shown} ({real}) overlaps the daemon's state dir "
                   f"{state} (journal, store, git mirror, caches); no Target may reach them",
                   "root-state")
        for other_real, other in placed:
            if _overlap(real, other_real):
                yield (target, f"local root {shown} ({real}) overlaps the root of Target "
                       f"{other.name!r} ({other_real}); give each Target a folder of its own",
                       "root-overlap")
        placed.append((real, target))


def check_roots(desired: Desired, settings: Settings, display_prefix: str) -> list[Diagnostic]:
    """The root rules as diagnostics, each at its Target's ``spec.local.root``."""
    diagnostics = []
    locators: dict[str, Locator] = {}
    for target, message, rule in root_problems(list(desired.targets.values()), settings):
        origin = target.origin
        locator = locators.get(origin.file)
        if locator is None:
            locator = Locator(desired.read_file(origin.file).decode("utf-8-sig"))
            locators[origin.file] = locator
        line, col = locator.locate(origin.document, ROOT_FIELD)
        diagnostics.append(Diagnostic(display_prefix + origin.file, line, col, message, rule))
    return diagnostics
