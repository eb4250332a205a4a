"""Keyword builders for the planner's and the executor's inputs: a test says only what it
is about (``target("prod", after="staging", soak="30m")``), the rest has defaults."""

from __future__ import annotations

import hashlib
from typing import Any

from reconciler.desired.documents import (
    Budget,
    Config,
    Desired,
    Model,
    Origin,
    Strategy,
    Target,
    build,
)
from reconciler.plan.observed import ObservedFile, ObservedPointer, ObservedTarget

ORIGIN = Origin("test.yaml", "0" * 40, 0, 1)
REVISION = "main@sha1:" + "c" * 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build(kind: str, name: str, spec: dict[str, Any]) -> Any:
    return build(kind, {"metadata": {"name": name}, "spec": spec}, ORIGIN)


def target(name: str, *, after: str | dict[str, Any] | None = None, soak: str | None = None,
           window: dict[str, Any] | None = None) -> Target:
    spec: dict[str, Any] = {"local": {"root": name}}
    spec.update({key: value for key, value in
                 (("after", after), ("soak", soak), ("window", window)) if value})
    result: Target = _build("Target", name, spec)
    return result


def strategy(name: str = "gepetto", *, targets: tuple[str, ...] = ("staging",),
             path: str | None = None, restart: bool = True, health: bool = True,
             on_failure: str = "rollback") -> Strategy:
    spec: dict[str, Any] = {"source": f"{name}.py", "targets": list(targets),
                            "deliver": {"path": path or f"strategies/{name}.py"},
                            "onFailure": on_failure}
    if restart:
        spec["restart"] = {"command": ["systemctl", "restart", name]}
    if health:
        spec["health"] = {"command": ["probe", name]}
    result: Strategy = _build("Strategy", name, spec)
    return result


def model(name: str = "policy", *, digest: str, targets: tuple[str, ...] = ("staging",),
          gauntlet: str | None = None, restart: bool = True, health: bool = False) -> Model:
    spec: dict[str, Any] = {"targets": list(targets),
                            "artifact": {"uri": f"{name}.pt", "sha256": digest},
                            "pointer": {"path": f"models/{name}.pt"}}
    if gauntlet:
        spec["gauntlet"] = gauntlet
    if restart:
        spec["restart"] = {"command": ["systemctl", "restart", "consumer"]}
    if health:
        spec["health"] = {"command": ["probe", "consumer"]}
    result: Model = _build("Model", name, spec)
    return result


def budget(*, restarts_per_hour: int | None = None, promotions_per_day: int | None = None
           ) -> Budget:
    spec = {key: value for key, value in (("restartsPerHour", restarts_per_hour),
                                          ("promotionsPerDay", promotions_per_day)) if value}
    result: Budget = _build("Budget", "limits", spec)
    return result


def desired(*, targets: tuple[Target, ...] = (), strategies: tuple[Strategy, ...] = (),
            configs: tuple[Config, ...] = (), models: tuple[Model, ...] = (),
            budgets: tuple[Budget, ...] = (), contents: dict[str, bytes] | None = None,
            files: dict[str, bytes] | None = None, revision: str = REVISION) -> Desired:
    """``contents``: what each Strategy or Config delivers, by name."""
    contents = contents or {}
    digests = {(obj.kind, obj.name): sha(contents.get(obj.name, b""))
               for obj in (*strategies, *configs)}
    return Desired(revision, {t.name: t for t in targets}, {s.name: s for s in strategies},
                   {c.name: c for c in configs}, {m.name: m for m in models}, {},
                   {b.name: b for b in budgets}, digests,
                   lambda obj: contents.get(obj.name, b""),
                   lambda path: (files or {})[path])


def observed(name: str, *, files: dict[str, str | None] | None = None,
             pointers: dict[str, str | None] | None = None) -> ObservedTarget:
    """What a target holds: file and pointer digests by address."""
    return ObservedTarget(name, f"/fleet/{name}",
                          {path: ObservedFile(path, digest)
                           for path, digest in (files or {}).items()},
                          {path: ObservedPointer(path, digest, digest)
                           for path, digest in (pointers or {}).items()})
