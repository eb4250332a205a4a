"""In-memory seams for unit tests of the executor: a store, a place and a fleet that keep
everything in dictionaries and do what a test scripts (httpx's MockTransport idea)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.desired.documents import Desired, Health, Model, Restart, Target
from reconciler.places import CommandResult
from reconciler.plan.observed import ObservedFile, ObservedPointer, ObservedTarget
from reconciler.plan.planner import address_of
from reconciler.store import StoreObjectMissing


class FakeStore:
    """Objects by digest; ``corrupt`` ones fail verification and are quarantined."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.quarantined: list[str] = []

    def location(self, digest: str) -> Path:
        return Path("/store/sha256") / digest

    def named(self, link: str) -> str | None:
        path = Path(link)
        return path.name if path.parent == Path("/store/sha256") else None

    def verified(self, digest: str) -> Path | None:
        content = self.objects.get(digest)
        if content is None:
            return None
        if hashlib.sha256(content).hexdigest() != digest:
            del self.objects[digest]
            self.quarantined.append(digest)
            return None
        return self.location(digest)

    def require(self, digest: str) -> Path:
        path = self.verified(digest)
        if path is None:
            raise StoreObjectMissing(f"sha256:{digest[:12]} is not in the store")
        return path

    def read(self, digest: str) -> bytes:
        self.require(digest)
        return self.objects[digest]

    def put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        self.objects[digest] = content
        return digest

    def put_file(self, source: Path) -> str:
        return self.put(source.read_bytes())

    def staging(self, name: str, *, resumable: bool = False) -> Path:
        raise NotImplementedError("the fake store takes bytes only")

    def publish(self, staged: Path, digest: str, *, proven: bool = False) -> Path:
        raise NotImplementedError("the fake store takes bytes only")

    def remove(self, digest: str) -> None:
        self.objects.pop(digest, None)


@dataclass
class FakePlace:
    """One target's content in memory. ``restart_results`` and ``check_results`` are
    popped in order (default: success); ``explode`` raises from ``write``."""

    target: Target
    store: FakeStore
    files: dict[str, bytes] = field(default_factory=dict)
    pointers: dict[str, str] = field(default_factory=dict)
    restart_results: list[bool] = field(default_factory=list)
    check_results: list[bool] = field(default_factory=list)
    command_results: list[bool] = field(default_factory=list)
    explode: Callable[[bytes], Exception | None] = lambda content: None
    calls: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"memory:{self.target.name}"

    def preserve(self, address: str) -> None:
        if address in self.files:
            self.store.put(self.files[address])

    def write(self, address: str, content: bytes, mode: int | None, revision: str) -> None:
        error = self.explode(content)
        if error is not None:
            raise error
        self.calls.append(f"write {address}")
        self.files[address] = content

    def remove(self, address: str, revision: str) -> None:
        self.calls.append(f"remove {address}")
        self.files.pop(address, None)

    def restart_detail(self, restart: Restart) -> dict[str, Any]:
        return {"command": list(restart.command or ())}

    def restart(self, action_kind: str, action_name: str, restart: Restart,
                digest: str | None, revision: str) -> CommandResult:
        self.calls.append(f"restart {action_kind}/{action_name}")
        ok = self.restart_results.pop(0) if self.restart_results else True
        return CommandResult(ok, "restarted" if ok else "restart exited with 1")

    def has_check(self, restart: Restart | None, health: Health | None) -> bool:
        return health is not None

    def check(self, action_kind: str, action_name: str, restart: Restart | None,
              health: Health | None, digest: str | None, revision: str,
              stop: threading.Event) -> CommandResult:
        self.calls.append(f"check {action_kind}/{action_name}")
        if stop.is_set():
            return CommandResult(False, "stopped during the health soak")
        ok = self.check_results.pop(0) if self.check_results else True
        return CommandResult(ok, "healthy" if ok else "unhealthy: probe answered 500")

    def workload(self, action_kind: str, action_name: str, restart: Restart | None,
                 digest: str, revision: str) -> FakePlace:
        return self  # commands only: ``command_results`` popped in order (default: success)

    def log(self, path: str | None, container: str | None) -> Any:
        raise NotImplementedError("the fake place has no logs")

    def command(self, argv: tuple[str, ...], timeout: float) -> CommandResult:
        self.calls.append(f"command {' '.join(argv)}")
        ok = self.command_results.pop(0) if self.command_results else True
        return CommandResult(ok, "command succeeded" if ok else "command exited with 1")

    def pointer_before(self, model: Model, desired: Desired) -> str | None:
        return self.pointers.get(address_of(model, self.target))

    def flip(self, model: Model, digest: str, revision: str) -> None:
        self.calls.append(f"flip {digest[:8]}")
        self.pointers[address_of(model, self.target)] = digest

    def point_back(self, model: Model, previous: str | None, revision: str) -> None:
        self.calls.append(f"point back {(previous or 'nothing')[:8]}")
        address = address_of(model, self.target)
        if previous is None:
            self.pointers.pop(address, None)
        else:
            self.pointers[address] = previous

    def pointed(self, model: Model) -> str | None:
        return self.pointers.get(address_of(model, self.target))


class FakeFleet:
    """Observes the fake places it made, one per target."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.places: dict[str, FakePlace] = {}

    def place(self, target: Target) -> FakePlace:
        if target.name not in self.places:
            self.places[target.name] = FakePlace(target, self.store)
        return self.places[target.name]

    def observe(self, target: Target, files: Iterable[str],
                pointers: Iterable[str]) -> ObservedTarget:
        place = self.place(target)
        return ObservedTarget(
            target.name, place.where,
            {path: ObservedFile(path, hashlib.sha256(place.files[path]).hexdigest()
                                if path in place.files else None) for path in files},
            {path: ObservedPointer(path, place.pointers.get(path), place.pointers.get(path))
             for path in pointers})

    def read(self, target: Target, address: str) -> bytes | None:
        return self.place(target).files.get(address)

    def finish_observing(self) -> None:
        """Nothing to persist."""
