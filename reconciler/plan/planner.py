"""The planner: a pure function (desired, observed, history, now) -> ordered actions.

No I/O. The same plan drives ``plan`` output, ``apply`` and the daemon, so what an operator
reviews is exactly what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from reconciler.desired.documents import Delivered, Desired, Health, Model, Restart, Target
from reconciler.durations import format_duration
from reconciler.fleet.local import ObservedTarget
from reconciler.plan.windows import next_opening

Op = Literal["create", "update", "flip", "delete", "noop"]
Status = Literal["ready", "waiting", "blocked"]
ObjectKey = tuple[str, str, str]  # (target, kind, name)


@dataclass(frozen=True, slots=True)
class History:
    """What the journal knows that a plan depends on.

    ``failed``: (digest, revision) that failed on a target: that content is not retried
    at that revision; a new commit gets one new attempt. ``healthy_since``: the digest each
    object has been healthy with on a target, and since when (epoch seconds), for soaks.
    ``known_good``: digests that were canonical for a model before: returning to one skips
    the gate (never the digest check).
    ``applied``: the digest last applied, so a difference from it is drift, not a change.
    ``unfinished``: content written whose restart or health check never finished (a crash,
    an API outage between the steps): live content equal to it is not in sync yet.
    """

    applied: Mapping[ObjectKey, str] = field(default_factory=dict)
    failed: Mapping[ObjectKey, tuple[str, str]] = field(default_factory=dict)
    healthy_since: Mapping[ObjectKey, tuple[str, float]] = field(default_factory=dict)
    known_good: Mapping[str, frozenset[str]] = field(default_factory=dict)
    unfinished: Mapping[ObjectKey, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Action:
    target: str
    kind: str
    name: str
    op: Op
    location: str
    current: str | None
    desired: str
    steps: tuple[str, ...] = ()
    drift: bool = False
    status: Status = "ready"
    reason: str | None = None  # PascalCase, for machines: Soaking, OutsideWindow, ...
    message: str | None = None
    not_before: float | None = None

    @property
    def key(self) -> ObjectKey:
        return (self.target, self.kind, self.name)

    @property
    def disruptive(self) -> bool:
        """Restarts and pointer flips interrupt consumers; windows hold them back."""
        return self.op == "flip" or any(step.startswith("restart:") for step in self.steps)


@dataclass(frozen=True, slots=True)
class Plan:
    revision: str
    targets: tuple[Target, ...]
    actions: tuple[Action, ...]
    errors: Mapping[str, str]  # target -> why it could not be observed

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.op != "noop")

    @property
    def in_sync(self) -> bool:
        return not self.changes and not self.errors


def ordered_targets(targets: Mapping[str, Target]) -> list[Target]:
    """Upstream before downstream (``after``), then by name. Validation excludes cycles."""
    ordered: list[Target] = []
    placed: set[str] = set()
    remaining = sorted(targets.values(), key=lambda t: t.name)
    while remaining:
        progress = [t for t in remaining if t.after is None or t.after in placed
                    or t.after not in targets]
        for target in progress:
            ordered.append(target)
            placed.add(target.name)
        remaining = [t for t in remaining if t.name not in placed]
        if not progress:  # a cycle slipped past validation: keep going, by name
            ordered += remaining
            break
    return ordered


def _follow_up(restart: Restart | None, health: Health | None) -> list[str]:
    steps = []
    if restart is not None:
        how = " ".join(restart.command) if restart.command else f"deployment/{restart.deployment}"
        steps.append(f"restart: {how}")
    if health is not None:
        probe = f"GET {health.http_url}" if health.http_url else " ".join(health.command or ())
        soak = f", soak {format_duration(health.soak_seconds)}" if health.soak_seconds else ""
        steps.append(f"health: {probe}{soak}")
    return steps


def _gate(action: Action, target: Target, targets: Mapping[str, Target], history: History,
          object_targets: tuple[str, ...], now: float, revision: str) -> Action:
    """Blocked by an earlier failure of this very content; waiting for the upstream soak or
    for the target's window."""
    if history.failed.get(action.key) == (action.desired, revision):
        return replace(action, status="blocked", reason="FailedBefore",
                       message=f"this revision failed on {target.name} and was rolled back; "
                       "it is not retried until a new commit")
    upstream = targets.get(target.after) if target.after else None
    if upstream is not None and upstream.name in object_targets:
        healthy = history.healthy_since.get((upstream.name, action.kind, action.name))
        if healthy is None or healthy[0] != action.desired:
            return replace(action, status="waiting", reason="UpstreamNotHealthy",
                           message=f"waits until {upstream.name} is healthy with this content"
                           + (f", then soaks {format_duration(target.soak_seconds)}"
                              if target.soak_seconds else ""))
        ready_at = healthy[1] + target.soak_seconds
        if now < ready_at:
            return replace(action, status="waiting", reason="Soaking",
                           message=f"soaking on {upstream.name} for "
                           f"{format_duration(target.soak_seconds)}", not_before=ready_at)
    if target.window is not None and action.disruptive:
        opens = next_opening(target.window, now)
        if opens is not None:
            return replace(action, status="waiting", reason="OutsideWindow",
                           message=f"restarts and flips wait for the window {target.window.start}"
                           f"-{target.window.end} {target.window.time_zone}", not_before=opens)
    return action


def _unfinished(history: History, key: ObjectKey, want: str, restart: Restart | None,
                health: Health | None) -> bool:
    """Written, but its restart or check never finished: do those before calling it done."""
    return (restart is not None or health is not None) and history.unfinished.get(key) == want


def _model_steps(model: Model, history: History) -> list[str]:
    steps = ["verify sha256"]
    if model.artifact.sha256 in history.known_good.get(model.name, frozenset()):
        steps.append("gate skipped: canonical before")
    elif model.gauntlet is not None:
        steps.append(f"gauntlet {model.gauntlet}")
    return steps + _follow_up(model.restart, model.health)


def plan(desired: Desired, observed: Mapping[str, ObservedTarget], history: History,
         now: float) -> Plan:
    """Every object on every target it is sent to, in the order a pass applies them."""
    actions: list[Action] = []
    errors: dict[str, str] = {}
    targets = ordered_targets(desired.targets)
    for target in targets:
        seen = observed[target.name]
        if seen.error is not None:
            errors[target.name] = seen.error
            continue
        declared: set[str] = set()
        for obj in desired.delivered():
            if target.name not in obj.targets:
                continue
            want = desired.content_digests[(obj.kind, obj.name)]
            address = address_of(obj, target)
            declared.add(address)
            current = seen.files[address].sha256
            op: Op = "noop" if current == want else ("create" if current is None else "update")
            finish = op == "noop" and _unfinished(history, (target.name, obj.kind, obj.name),
                                                  want, obj.restart, obj.health)
            if finish:
                op = "update"
            steps = () if op == "noop" else tuple(
                [*(["finish: the last attempt stopped before its restart or health check"]
                   if finish else []), *_follow_up(obj.restart, obj.health)])
            drift = op != "noop" and history.applied.get((target.name, obj.kind, obj.name)) == want
            action = Action(target.name, obj.kind, obj.name, op, _location(address, target, obj),
                            current, want, steps, drift)
            if op != "noop":
                action = _gate(action, target, desired.targets, history, obj.targets, now,
                               desired.revision)
            actions.append(action)
        for model in sorted(desired.models.values(), key=lambda m: m.name):
            if target.name not in model.targets:
                continue
            want = model.artifact.sha256
            address = address_of(model, target)
            declared.add(address)
            current = seen.pointers[address].sha256
            op = "noop" if current == want and not _unfinished(
                history, (target.name, "Model", model.name), want, model.restart,
                model.health) else "flip"
            action = Action(target.name, "Model", model.name, op,
                            _location(address, target, model), current, want,
                            () if op == "noop" else tuple(_model_steps(model, history)),
                            op != "noop" and history.applied.get(
                                (target.name, "Model", model.name)) == want)
            if op != "noop":
                action = _gate(action, target, desired.targets, history, model.targets, now,
                               desired.revision)
            actions.append(action)
        actions += _prune(target, seen, declared)
    return Plan(desired.revision, tuple(targets), tuple(actions), errors)


def address_of(obj: Delivered | Model, target: Target) -> str:
    """Where an object lives on a target: a path under a local root, or ``configmap/key``
    on Kubernetes. Validation guarantees the object declares the form its target needs."""
    # On every object of every pass (2,000-document bench): kept to plain attribute reads.
    place = obj.pointer if isinstance(obj, Model) else obj.deliver
    ref = place.config_map
    if ref is None or target.local_root is not None:
        assert place.path is not None
        return place.path
    return f"{ref.name}/{ref.key}"


def _location(address: str, target: Target, obj: Delivered | Model) -> str:
    """The address in words, for plans and messages."""
    if not target.is_local:
        name, key = address.split("/", 1)
        return f"ConfigMap {name} key {key}"
    return f"{'symlink' if isinstance(obj, Model) else 'file'} {address}"


def observation_request(desired: Desired, target: Target) -> tuple[list[str], list[str]]:
    """The delivered files and pointers a target must be observed at for a plan."""
    return ([address_of(obj, target) for obj in desired.delivered()
             if target.name in obj.targets],
            [address_of(model, target) for model in desired.models.values()
             if target.name in model.targets])


def _prune(target: Target, seen: ObservedTarget, declared: set[str]) -> list[Action]:
    """ConfigMap keys we wrote that nothing declares any more: deleted only when the
    Target says ``prune``; a ConfigMap left with no keys at all is deleted whole."""
    if target.is_local or not target.prune:
        return []
    actions = []
    for name, keys in sorted(seen.managed.items()):
        stale = sorted(key for key in keys if f"{name}/{key}" not in declared)
        if not stale:
            continue
        whole = len(stale) == len(keys) and not any(d.startswith(f"{name}/") for d in declared)
        for key in stale:
            actions.append(Action(target.name, "ConfigMap", f"{name}/{key}", "delete",
                                  f"ConfigMap {name} key {key}" + (
                                      " (the last key reconciler manages there)"
                                      if whole and key == stale[-1] else ""),
                                  None, "", ("prune: no longer declared",)))
    return actions
