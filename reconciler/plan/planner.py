"""The planner: a pure function (desired, observed, history, now) -> ordered actions.

No I/O. The same plan drives ``plan`` output, ``apply`` and the daemon (execute/passes.py
builds all three from the same inputs, the journal's history included), so what an operator
reviews is exactly what runs. Budgets are decided here too: ``plan`` shows BudgetExhausted
exactly where ``apply`` would refuse.

Repairing drift is not a promotion: putting back the declared, verified content (a file, a
ConfigMap key, a canonical pointer) happens at once whatever ``promotionsPerDay`` says; a
window or a spent restart budget defers only the restart the repair needs, never the repair.

A suspended target (``reconciler suspend``) is observed and planned as usual, so ``plan``
and ``status`` show its drift and pending changes, but every action on it waits with
reason ``Suspended``, drift repairs and prunes included.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from reconciler.desired.documents import (
    AnalysisCheck,
    Budget,
    Delivered,
    Desired,
    Health,
    Model,
    Restart,
    Target,
)
from reconciler.durations import format_duration
from reconciler.plan.observed import ObservedTarget
from reconciler.plan.windows import next_opening
from reconciler.vocabulary import ActionStatus, Op, Reason, StepKind

ObjectKey = tuple[str, str, str]  # (target, kind, name)
HOUR, DAY = 3600.0, 86400.0
ALL_TARGETS = "*"  # the suspension of ``suspend --all``: every target, declared later too


@dataclass(frozen=True, slots=True)
class Suspension:
    """A person stopped the line on a target (or on all of them): who, when, why."""

    target: str
    who: str
    at: float
    reason: str

    def describe(self) -> str:
        scope = "the whole fleet is" if self.target == ALL_TARGETS else f"{self.target} is"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.at))
        again = "--all" if self.target == ALL_TARGETS else self.target
        return (f"{scope} suspended by {self.who} at {when}: {self.reason}; nothing is "
                f"changed on it until `reconciler resume {again}`")


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
    an API outage, a deferred restart): live content equal to it is not in sync yet.
    ``restarts``, ``promotions``: when restarts and promotions (pointer flips to a new
    digest) were done recently, for the Budget. ``suspended``: targets (or ``*``, all of
    them) where nothing may be changed.
    ``recall_to``: for content some other target of the same object failed with, on a
    target that took it: (that digest, what the target had before it; None: nothing). A
    wave's failure puts that back (docs/waves.md). ``failed_alone``: objects whose failure
    mark is no wave that failed (an inconclusive analysis, a failed drift repair): it holds
    that target and recalls nothing elsewhere.
    """

    applied: Mapping[ObjectKey, str] = field(default_factory=dict)
    failed: Mapping[ObjectKey, tuple[str, str]] = field(default_factory=dict)
    healthy_since: Mapping[ObjectKey, tuple[str, float]] = field(default_factory=dict)
    known_good: Mapping[str, frozenset[str]] = field(default_factory=dict)
    unfinished: Mapping[ObjectKey, str] = field(default_factory=dict)
    restarts: tuple[float, ...] = ()
    promotions: tuple[float, ...] = ()
    suspended: Mapping[str, Suspension] = field(default_factory=dict)
    recall_to: Mapping[ObjectKey, tuple[str, str | None]] = field(default_factory=dict)
    failed_alone: frozenset[ObjectKey] = frozenset()

    def suspension(self, target: str) -> Suspension | None:
        """Why nothing may change on ``target``: its own suspension, else the fleet's."""
        return self.suspended.get(target) or self.suspended.get(ALL_TARGETS)


@dataclass(frozen=True, slots=True)
class Wave:
    """Where a target stands in an object's waves, for ``plan`` and ``status``: its wave
    (1: waits for nothing), the targets it waits for, how many of them must be healthy
    with the content and soaked, how many are healthy with it now."""

    number: int
    after: tuple[str, ...]
    needed: int
    healthy: int

    def to_json(self) -> dict[str, object]:
        return {"wave": self.number, "after": list(self.after), "needed": self.needed,
                "healthy": self.healthy}

    def describe(self) -> str:
        if not self.after:
            return f"wave {self.number}"
        return (f"wave {self.number}: {self.healthy} of {self.needed} needed healthy "
                f"({', '.join(self.after)})")


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an action, in the order they run. ``deferred``: why this step waits
    while the rest of the action runs (a repair whose restart the budget or window holds)."""

    kind: StepKind
    detail: str = ""
    deferred: str | None = None
    seconds: float | None = None  # an analysis check: how long it measures
    check: str | None = None  # an analysis check: its name


@dataclass(frozen=True, slots=True)
class Action:
    target: str
    kind: str
    name: str
    op: Op
    location: str
    current: str | None
    desired: str
    steps: tuple[Step, ...] = ()
    drift: bool = False
    status: ActionStatus = ActionStatus.READY
    reason: Reason | None = None
    message: str | None = None
    not_before: float | None = None
    wave: Wave | None = None  # only for objects whose targets wait for each other

    @property
    def key(self) -> ObjectKey:
        return (self.target, self.kind, self.name)

    def has(self, kind: StepKind) -> bool:
        return any(step.kind is kind for step in self.steps)

    @property
    def restarts(self) -> bool:
        return self.has(StepKind.RESTART)

    @property
    def restart_deferred(self) -> str | None:
        """Why the restart (and its check) wait while the repair itself runs, if they do."""
        return next((s.deferred for s in self.steps if s.kind is StepKind.RESTART and s.deferred),
                    None)

    @property
    def finishes(self) -> bool:
        """Only owes the restart and check of content already in place."""
        return self.has(StepKind.FINISH)

    @property
    def disruptive(self) -> bool:
        """Restarts and pointer flips interrupt consumers; windows hold them back."""
        return self.op is Op.FLIP or self.restarts


@dataclass(frozen=True, slots=True)
class Plan:
    revision: str
    targets: tuple[Target, ...]
    actions: tuple[Action, ...]
    errors: Mapping[str, str]  # target -> why it could not be observed

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.op is not Op.NOOP)

    @property
    def in_sync(self) -> bool:
        return not self.changes and not self.errors


@dataclass(slots=True)
class _Spending:
    """Budget use as the plan goes: what earlier actions of this pass will spend counts."""

    restarts: list[float]
    promotions: list[float]


def ordered_targets(targets: Mapping[str, Target]) -> list[Target]:
    """Upstream before downstream (``after``), then by name. Validation excludes cycles."""
    ordered: list[Target] = []
    placed: set[str] = set()
    remaining = sorted(targets.values(), key=lambda t: t.name)
    while remaining:
        progress = [t for t in remaining if t.after is None or all(
            name in placed or name not in targets for name in t.after.targets)]
        for target in progress:
            ordered.append(target)
            placed.add(target.name)
        remaining = [t for t in remaining if t.name not in placed]
        if not progress:  # a cycle slipped past validation: keep going, by name
            ordered += remaining
            break
    return ordered


def _follow_up(restart: Restart | None, health: Health | None,
               analysis: tuple[AnalysisCheck, ...] = ()) -> list[Step]:
    steps = []
    if restart is not None:
        how = " ".join(restart.command) if restart.command else f"deployment/{restart.deployment}"
        steps.append(Step(StepKind.RESTART, how))
    if health is not None:
        probe = f"GET {health.http_url}" if health.http_url else " ".join(health.command or ())
        soak = f", soak {format_duration(health.soak_seconds)}" if health.soak_seconds else ""
        steps.append(Step(StepKind.HEALTH, probe + soak))
    soak_seconds = health.soak_seconds if health is not None else 0.0
    for check in analysis:
        steps.append(Step(StepKind.ANALYSIS, f"{check.name}: {check.subject}, every "
                          f"{format_duration(check.interval_seconds)} x "
                          f"{check.measurements(soak_seconds)} "
                          f"({format_duration(check.duration_seconds(soak_seconds))})",
                          seconds=check.duration_seconds(soak_seconds), check=check.name))
    return steps


def _defer_restart(action: Action, why: str) -> Action:
    """The repair runs now; its restart and health check wait (the consumer keeps running
    what it loaded until then)."""
    return replace(action, steps=tuple(
        replace(step, deferred=why)
        if step.kind in (StepKind.RESTART, StepKind.HEALTH, StepKind.ANALYSIS)
        else step for step in action.steps))


def _budget(action: Action, budget: Budget | None, spending: _Spending,
            now: float) -> Action:
    """Refuse what the Budget does not allow; a repair only defers its restart."""
    if budget is None:
        return action
    repair = action.drift or action.finishes
    if action.restarts and not action.restart_deferred and budget.restarts_per_hour is not None:
        recent = sorted(t for t in spending.restarts if t > now - HOUR)
        if len(recent) >= budget.restarts_per_hour:
            frees = recent[len(recent) - budget.restarts_per_hour] + HOUR
            why = (f"restart budget exhausted: {len(recent)} of {budget.restarts_per_hour} "
                   "restarts in the last hour")
            if action.finishes:
                return replace(action, status=ActionStatus.WAITING,
                               reason=Reason.RESTART_DEFERRED, not_before=frees,
                               message=f"{why}; the consumer still runs what it loaded")
            if repair:
                return _defer_restart(action, why)
            return replace(action, status=ActionStatus.BLOCKED,
                           reason=Reason.BUDGET_EXHAUSTED, message=why, not_before=frees)
        spending.restarts.append(now)
    if action.op is Op.FLIP and not repair and budget.promotions_per_day is not None:
        recent = sorted(t for t in spending.promotions if t > now - DAY)
        if len(recent) >= budget.promotions_per_day:
            return replace(action, status=ActionStatus.BLOCKED, reason=Reason.BUDGET_EXHAUSTED,
                           not_before=recent[len(recent) - budget.promotions_per_day] + DAY,
                           message=f"promotion budget exhausted: {len(recent)} of "
                           f"{budget.promotions_per_day} pointer flips in the last day")
        spending.promotions.append(now)
    return action


def wave_numbers(targets: Mapping[str, Target], among: frozenset[str]) -> dict[str, int]:
    """Each target's wave among an object's targets: 1 waits for none of them, else one
    more than the latest wave it waits for."""
    numbers: dict[str, int] = {}
    for target in ordered_targets({name: targets[name] for name in among if name in targets}):
        waits = _waits_for(target, among)
        numbers[target.name] = 1 + max((numbers.get(name, 1) for name in waits), default=0)
    return numbers


def _waits_for(target: Target, among: frozenset[str]) -> tuple[str, ...]:
    """The targets of ``after`` that the object is sent to (it cannot wait for others)."""
    if target.after is None:
        return ()
    return tuple(name for name in target.after.targets if name in among and name != target.name)


def chains(targets: Mapping[str, Target], among: frozenset[str]) -> dict[str, frozenset[str]]:
    """The object's targets linked by ``after`` (either way): one rollout, whose failure
    anywhere takes the revision back everywhere in it. A target alone is its own chain."""
    linked: dict[str, set[str]] = {name: {name} for name in among}
    for name in among:
        if name in targets:
            for upstream in _waits_for(targets[name], among):
                linked[name].add(upstream)
                linked[upstream].add(name)
    chain_of: dict[str, frozenset[str]] = {}
    for name in sorted(among):
        if name in chain_of:
            continue
        found, todo = {name}, [name]
        while todo:
            for other in linked[todo.pop()] - found:
                found.add(other)
                todo.append(other)
        for member in found:
            chain_of[member] = frozenset(found)
    return chain_of


@dataclass(frozen=True, slots=True)
class _Rollout:
    """One object's waves at this revision: each target's chain and wave, and where the
    content already failed (its failure marks at this revision)."""

    chain_of: Mapping[str, frozenset[str]]
    wave_of: Mapping[str, int]
    failed_on: frozenset[str]

    def failed_upstream(self, target: str) -> list[str]:
        """Other targets of this target's chain the content failed on at this revision."""
        return sorted(self.failed_on & (self.chain_of.get(target, frozenset()) - {target}))


def _wave(action: Action, target: Target, rollout: _Rollout, history: History) -> Wave | None:
    if len(rollout.chain_of.get(target.name, ())) < 2:
        return None
    waits = _waits_for(target, frozenset(rollout.chain_of[target.name]))
    healthy = sum(1 for name in waits if history.healthy_since.get(
        (name, action.kind, action.name), ("", 0.0))[0] == action.desired)
    needed = target.after.needed(len(waits)) if target.after is not None else 0
    return Wave(rollout.wave_of.get(target.name, 1), waits, needed, healthy)


def _recall(action: Action, failed: list[str], rollout: _Rollout, history: History,
            follow_up: list[Step]) -> Action:
    """The revision failed elsewhere in this target's waves. A target that took it gives it
    back (``recall``: what it had before, restarted and checked); one that has not is held
    (a later wave never gets it). A new commit gives it one new attempt."""
    where = ", ".join(f"{name} (wave {rollout.wave_of.get(name, 1)})" for name in failed)
    took = action.current == action.desired or history.applied.get(action.key) == action.desired
    if not took:
        return replace(action, status=ActionStatus.BLOCKED, reason=Reason.WAVE_FAILED,
                       message=f"held: this revision failed on {where}; a later wave never "
                       "gets it, a new commit gives it one new attempt")
    before = history.recall_to.get(action.key)
    if before is None or before[0] != action.desired:
        return replace(action, status=ActionStatus.BLOCKED, reason=Reason.WAVE_FAILED,
                       message=f"this revision failed on {where}, but what this target had "
                       "before it is not in the journal: put it back by hand, or commit a fix")
    recall = Step(StepKind.RECALL, f"failed on {where}: put back "
                  + (f"sha256:{before[1][:12]}" if before[1] else "nothing (remove it)"))
    return replace(action, op=Op.RECALL, current=action.desired, desired=before[1] or "",
                   steps=(recall, *follow_up), drift=False, status=ActionStatus.READY,
                   reason=Reason.WAVE_FAILED, message=f"this revision failed on {where}")


def _gate(action: Action, target: Target, targets: Mapping[str, Target], history: History,
          object_targets: tuple[str, ...], now: float, revision: str) -> Action:
    """Blocked by an earlier failure of this very content; waiting for the upstream soak or
    for the target's window (a repair runs at once and only its restart waits)."""
    if history.failed.get(action.key) == (action.desired, revision):
        return replace(action, status=ActionStatus.BLOCKED, reason=Reason.FAILED_BEFORE,
                       message=f"this revision failed on {target.name}; it is not retried "
                       "until a new commit")
    waits = _waits_for(target, frozenset(object_targets))
    if waits and target.after is not None and not action.drift:
        needed = target.after.needed(len(waits))
        since = sorted(healthy[1] for name in waits
                       if (healthy := history.healthy_since.get(
                           (name, action.kind, action.name))) is not None
                       and healthy[0] == action.desired)
        upstream = target.after.describe() if len(waits) == len(target.after.targets) \
            else f"{needed} of {', '.join(waits)}"
        if len(since) < needed:
            return replace(action, status=ActionStatus.WAITING,
                           reason=Reason.UPSTREAM_NOT_HEALTHY,
                           message=f"waits until {upstream} "
                           f"{'is' if len(waits) == 1 else 'are'} healthy with this content"
                           + (f" ({len(since)} of {needed} so far)" if needed > 1 else "")
                           + (f", then soaks {format_duration(target.soak_seconds)}"
                              if target.soak_seconds else ""))
        ready_at = since[needed - 1] + target.soak_seconds
        if now < ready_at:
            return replace(action, status=ActionStatus.WAITING, reason=Reason.SOAKING,
                           message=f"soaking on {upstream} for "
                           f"{format_duration(target.soak_seconds)}", not_before=ready_at)
    if target.window is not None and action.disruptive:
        opens = next_opening(target.window, now)
        if opens is not None:
            why = (f"restarts and flips wait for the window {target.window.start}"
                   f"-{target.window.end} {target.window.time_zone}")
            if action.drift and not action.finishes:
                return replace(_defer_restart(action, why), not_before=opens)
            return replace(action, status=ActionStatus.WAITING, reason=Reason.OUTSIDE_WINDOW,
                           message=why, not_before=opens)
    return action


def _unfinished(history: History, key: ObjectKey, want: str, restart: Restart | None,
                health: Health | None) -> bool:
    """Written, but its restart or check never finished: do those before calling it done;
    or live but failed (``onFailure: hold`` keeps it in place): never counted healthy. The
    gate blocks it at the revision that failed; a new commit gets one new restart and check."""
    if (failed := history.failed.get(key)) is not None and failed[0] == want:
        return True
    return (restart is not None or health is not None) and history.unfinished.get(key) == want


FINISH = Step(StepKind.FINISH, "restart and check what is already in place (the last "
              "attempt stopped before them, they were deferred, or it failed and is held)")


def _model_steps(model: Model, history: History, drift: bool) -> list[Step]:
    steps = [Step(StepKind.VERIFY, "sha256")]
    if model.artifact.sha256 in history.known_good.get(model.name, frozenset()):
        steps.append(Step(StepKind.GATE_SKIPPED, "canonical before"))
    elif model.gauntlet is not None:
        steps.append(Step(StepKind.GATE, model.gauntlet))
    return steps + _follow_up(model.restart, model.health, () if drift else model.analysis)


def plan(desired: Desired, observed: Mapping[str, ObservedTarget], history: History,
         now: float) -> Plan:
    """Every object on every target it is sent to, in the order a pass applies them."""
    actions: list[Action] = []
    errors: dict[str, str] = {}
    targets = ordered_targets(desired.targets)
    budget = next(iter(desired.budgets.values()), None)
    spending = _Spending(list(history.restarts), list(history.promotions))

    shapes: dict[frozenset[str], tuple[dict[str, frozenset[str]], dict[str, int]]] = {}
    rollouts: dict[tuple[str, str], _Rollout | None] = {}

    def rollout_of(kind: str, name: str, among: tuple[str, ...], want: str) -> _Rollout | None:
        """The object's waves, when any of its targets waits for another (else None: the
        common case costs one look at each target)."""
        if (kind, name) not in rollouts:
            members = frozenset(among)
            waves = any(_waits_for(desired.targets[t], members)
                        for t in members if t in desired.targets)
            if waves and members not in shapes:
                shapes[members] = (chains(desired.targets, members),
                                   wave_numbers(desired.targets, members))
            rollouts[(kind, name)] = _Rollout(*shapes[members], frozenset(
                t for t in members if history.failed.get((t, kind, name)) ==
                (want, desired.revision) and (t, kind, name) not in history.failed_alone
                )) if waves else None
        return rollouts[(kind, name)]

    def gated(action: Action, obj: Delivered | Model) -> Action:
        object_targets = obj.targets
        rollout = rollout_of(action.kind, action.name, object_targets, action.desired)
        if rollout is not None:
            target = desired.targets[action.target]
            action = replace(action, wave=_wave(action, target, rollout, history))
            failed = rollout.failed_upstream(action.target)
            if failed and action.target not in rollout.failed_on:
                recall = _recall(action, failed, rollout, history,
                                 _follow_up(obj.restart, obj.health))
                # A suspended target keeps even a failed revision until it is resumed.
                return _suspended(recall, history) if recall.op is Op.RECALL else recall
        if action.op is Op.NOOP or history.suspension(action.target) is not None:
            return _suspended(action, history)  # a suspended action spends no budget
        action = _gate(action, desired.targets[action.target], desired.targets, history,
                       object_targets, now, desired.revision)
        if action.status is not ActionStatus.READY:
            return action
        return _budget(action, budget, spending, now)

    for target in targets:
        seen = observed[target.name]
        if seen.error is not None:
            errors[target.name] = seen.error
            continue
        declared: set[str] = set()
        for obj in desired.delivered:
            if target.name not in obj.targets:
                continue
            want = desired.content_digests[(obj.kind, obj.name)]
            key: ObjectKey = (target.name, obj.kind, obj.name)
            address = address_of(obj, target)
            declared.add(address)
            current = seen.files[address].sha256
            op = Op.NOOP if current == want else (Op.CREATE if current is None else Op.UPDATE)
            finish = op is Op.NOOP and _unfinished(history, key, want, obj.restart, obj.health)
            if finish:
                op = Op.UPDATE
            drift = op is not Op.NOOP and not finish and history.applied.get(key) == want
            # A repair puts back known-good content: nothing to analyse.
            steps = () if op is Op.NOOP else tuple(
                [*([FINISH] if finish else []),
                 *_follow_up(obj.restart, obj.health, () if drift else obj.analysis)])
            actions.append(gated(Action(target.name, obj.kind, obj.name, op,
                                        _location(address, target, obj), current, want, steps,
                                        drift), obj))
        for model in sorted(desired.models.values(), key=lambda m: m.name):
            if target.name not in model.targets:
                continue
            want = model.artifact.sha256
            key = (target.name, "Model", model.name)
            address = address_of(model, target)
            declared.add(address)
            current = seen.pointers[address].sha256
            finish = current == want and _unfinished(history, key, want, model.restart,
                                                     model.health)
            op = Op.FLIP if current != want or finish else Op.NOOP
            drift = op is not Op.NOOP and not finish and history.applied.get(key) == want
            steps = () if op is Op.NOOP else tuple(
                [*([FINISH] if finish else []), *_model_steps(model, history, drift)])
            actions.append(gated(Action(target.name, "Model", model.name, op,
                                        _location(address, target, model), current, want,
                                        steps, drift), model))
        actions += [_suspended(action, history) for action in _prune(target, seen, declared)]
    return Plan(desired.revision, tuple(targets), tuple(actions), errors)


def _suspended(action: Action, history: History) -> Action:
    """Nothing changes on a suspended target: the action waits (its plan still shows
    what would change), before any budget or window is asked."""
    if action.op is Op.NOOP or (suspension := history.suspension(action.target)) is None:
        return action
    held = (f"drift on {action.location} is not repaired" if action.drift
            else f"{action.location} is in place but unverified: its restart and check wait"
            if action.finishes else f"{action.op} of {action.location} waits")
    return replace(action, status=ActionStatus.WAITING, reason=Reason.SUSPENDED,
                   message=f"{held}: {suspension.describe()}", not_before=None)


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
    if target.kube_namespace is not None:
        name, key = address.split("/", 1)
        return f"ConfigMap {name} key {key}"
    return f"{'symlink' if isinstance(obj, Model) else 'file'} {address}"


def observation_request(desired: Desired, target: Target) -> tuple[list[str], list[str]]:
    """The delivered files and pointers a target must be observed at for a plan."""
    return ([address_of(obj, target) for obj in desired.delivered
             if target.name in obj.targets],
            [address_of(model, target) for model in desired.models.values()
             if target.name in model.targets])


def _prune(target: Target, seen: ObservedTarget, declared: set[str]) -> list[Action]:
    """ConfigMap keys we wrote that nothing declares any more: deleted only when the
    Target says ``prune``; a ConfigMap left with no keys at all is deleted whole."""
    if not target.prune:  # validation allows prune only where the fleet reports ``managed``
        return []
    actions = []
    for name, keys in sorted(seen.managed.items()):
        stale = sorted(key for key in keys if f"{name}/{key}" not in declared)
        if not stale:
            continue
        whole = len(stale) == len(keys) and not any(d.startswith(f"{name}/") for d in declared)
        for key in stale:
            actions.append(Action(target.name, "ConfigMap", f"{name}/{key}", Op.DELETE,
                                  f"ConfigMap {name} key {key}" + (
                                      " (the last key reconciler manages there)"
                                      if whole and key == stale[-1] else ""),
                                  None, "", (Step(StepKind.PRUNE, "no longer declared"),)))
    return actions
