"""What the planner is told about the live fleet: its input types, owned here so that every
fleet adapter (local, Kubernetes, the next one) produces the same shapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ObservedFile:
    """A delivered file as it is: ``sha256`` None when absent or unreadable (see problem)."""

    path: str
    sha256: str | None
    mode: int | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ObservedPointer:
    """A canonical pointer: ``sha256`` is the verified store object it names (None when it
    names nothing, or something unverified); ``link`` is the raw value (symlink text, or a
    pointer ConfigMap key's JSON)."""

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
