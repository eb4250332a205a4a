"""What a plan will spend: games and GPU-seconds of its gates, the time its soaks hold the
line, and its restarts and promotions, each against the Budget.

So that a reviewer sees in the pull request what a merge will cost before it is merged.
Pure: the inputs that need I/O (the SPRT's expected lengths per opponent, the seconds a game
took before, the verdicts already remembered, the GPU-seconds used today) are measured by
the caller (costs.py) and handed in.

A gate is counted once per (model, digest): its verdict is remembered, so the second target
that flips the same digest plays nothing. A remembered verdict costs nothing at all.
Blocked actions spend nothing (they will not run); waiting ones do, later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from reconciler.desired.documents import Desired, Target
from reconciler.durations import format_duration
from reconciler.plan.planner import DAY, HOUR, History, Plan
from reconciler.vocabulary import ActionStatus, Op, StepKind

GateCosts = Mapping[str, Sequence[Mapping[str, object]]]  # model -> per-opponent expectations
Rates = Mapping[str, tuple[float, float]]  # gauntlet -> (seconds, GPU-seconds) per game


@dataclass(frozen=True, slots=True)
class GateSpend:
    """One gate run the plan will cause. Games are summed over the opponents;
    ``*_per_game`` are measured from earlier runs of the same gauntlet (None: never run)."""

    model: str
    gauntlet: str
    digest: str
    targets: tuple[str, ...]
    remembered: str | None  # "passed", "rejected" or "inconclusive": nothing is played
    expected_games: int  # for a model exactly at the bar
    expected_games_at_margin: int  # for a model at bar + margin
    max_games: int  # the budget that caps it
    seconds_per_game: float | None
    gpu_seconds_per_game: float | None
    gpu_reserve: float  # the gauntlet's declared gpuSeconds, charged to the day's budget

    @property
    def expected_gpu_seconds(self) -> float | None:
        """At the measured rate, for the longer of the two expected lengths."""
        if self.remembered:
            return 0.0
        rate = self.gpu_seconds_per_game
        return None if rate is None else rate * max(self.expected_games,
                                                    self.expected_games_at_margin)

    @property
    def worst_gpu_seconds(self) -> float:
        """The most this gate can charge: its reserve, or the cap at the measured rate."""
        if self.remembered:
            return 0.0
        measured = (self.gpu_seconds_per_game or 0.0) * self.max_games
        return max(self.gpu_reserve, measured)


@dataclass(frozen=True, slots=True)
class Hold:
    """Time a change holds the line on a target: an object's health soak or analysis (the
    longer), or a target's soak after its upstream."""

    target: str
    subject: str  # "Strategy/gepetto", or "after staging"
    seconds: float


@dataclass(frozen=True, slots=True)
class Allowance:
    """A budgeted quantity: what the plan spends, what the window already used, the limit
    (None: no Budget says)."""

    planned: float
    used: float
    limit: float | None

    @property
    def fits(self) -> bool:
        return self.limit is None or self.used + self.planned <= self.limit


@dataclass(frozen=True, slots=True)
class Spend:
    budget: str | None
    gates: tuple[GateSpend, ...]
    holds: tuple[Hold, ...]
    gpu_seconds: Allowance  # planned: the worst case of every gate
    promotions: Allowance
    restarts: Allowance
    longest_seconds: float  # until the last target has had every change and its soaks

    @property
    def expected_gpu_seconds(self) -> float | None:
        values = [gate.expected_gpu_seconds for gate in self.gates]
        return None if any(v is None for v in values) else sum(v or 0.0 for v in values)


def spend(plan: Plan, desired: Desired, history: History, now: float, *,
          gate_costs: GateCosts, rates: Rates, remembered: Mapping[tuple[str, str], str],
          gpu_used_today: float) -> Spend:
    """``remembered``: (model, digest) -> the verdict already known ("passed", ...)."""
    running = [a for a in plan.changes if a.status is not ActionStatus.BLOCKED]
    gates: dict[tuple[str, str], GateSpend] = {}
    for action in running:
        if not action.has(StepKind.GATE):
            continue
        model = desired.models[action.name]
        if model.gauntlet is None or model.gauntlet not in desired.gauntlets:
            continue
        key = (model.name, action.desired)
        if key in gates:
            gates[key] = _with_target(gates[key], action.target)
            continue
        costs = gate_costs.get(model.name, ())
        verdict = remembered.get(key)
        rate = rates.get(model.gauntlet)
        gates[key] = GateSpend(
            model.name, model.gauntlet, action.desired, (action.target,), verdict,
            0 if verdict else sum(_int(c["expectedGamesAtBar"]) for c in costs),
            0 if verdict else sum(_int(c["expectedGamesAtBarPlusMargin"]) for c in costs),
            0 if verdict else sum(_int(c["maxGames"]) for c in costs),
            None if rate is None else rate[0], None if rate is None else rate[1],
            float(desired.gauntlets[model.gauntlet].spec.get("gpuSeconds", 0)))
    holds = _holds(plan, desired, running)
    budget = next(iter(desired.budgets.values()), None)
    restarts = sum(1 for a in running if a.restarts and not a.restart_deferred)
    promotions = sum(1 for a in running if a.op is Op.FLIP and not (a.drift or a.finishes))
    return Spend(
        budget.name if budget else None, tuple(gates.values()), holds,
        Allowance(sum(g.worst_gpu_seconds for g in gates.values()), gpu_used_today,
                  budget.gauntlet_gpu_seconds_per_day if budget else None),
        Allowance(promotions, sum(1 for t in history.promotions if t > now - DAY),
                  budget.promotions_per_day if budget else None),
        Allowance(restarts, sum(1 for t in history.restarts if t > now - HOUR),
                  budget.restarts_per_hour if budget else None),
        _longest(plan.targets, holds))


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _with_target(gate: GateSpend, target: str) -> GateSpend:
    return replace(gate, targets=(*gate.targets, target))


def upstreams(target: Target) -> tuple[str, ...]:
    """The targets a revision must be healthy on before it reaches this one."""
    return target.after.targets if target.after else ()


def _holds(plan: Plan, desired: Desired, running: Sequence[Any]) -> tuple[Hold, ...]:
    holds: list[Hold] = []
    changed_targets = {a.target for a in running}
    for action in running:
        obj = (desired.strategies.get(action.name) if action.kind == "Strategy" else
               desired.configs.get(action.name) if action.kind == "Config" else
               desired.models.get(action.name))
        health = getattr(obj, "health", None)
        soak = health.soak_seconds if health is not None and action.has(StepKind.HEALTH) \
            else 0.0
        # Analysis checks measure beside the health soak: the change holds the longer.
        analysed = max((step.seconds or 0.0 for step in action.steps
                        if step.kind is StepKind.ANALYSIS and not step.deferred), default=0.0)
        if max(soak, analysed):
            holds.append(Hold(action.target, f"{action.kind}/{action.name}",
                              max(soak, analysed)))
    for target in plan.targets:
        if target.name in changed_targets and target.soak_seconds and upstreams(target):
            holds.append(Hold(target.name, "after " + ", ".join(upstreams(target)),
                              target.soak_seconds))
    return tuple(holds)


def _longest(targets: Sequence[Target], holds: Sequence[Hold]) -> float:
    """Until the last target is done: along ``after`` (targets come upstream first), each
    target starts when its upstreams are done plus its own soak after them, and is done
    after its longest object soak."""
    object_soak: dict[str, float] = {}
    after_soak: dict[str, float] = {}
    for hold in holds:
        table = after_soak if hold.subject.startswith("after ") else object_soak
        table[hold.target] = max(table.get(hold.target, 0.0), hold.seconds)
    done: dict[str, float] = {}
    for target in targets:
        start = _upstreams_done(target, done)
        done[target.name] = start + after_soak.get(target.name, 0.0) + \
            object_soak.get(target.name, 0.0)
    return max(done.values(), default=0.0)


def _upstreams_done(target: Target, done: Mapping[str, float]) -> float:
    """When enough of the upstream targets are done: all of them, or the count or share
    of them ``after`` asks for (the earliest ones)."""
    if target.after is None:
        return 0.0
    times = sorted(done.get(name, 0.0) for name in target.after.targets)
    return times[max(1, target.after.needed(len(times))) - 1]


def _seconds(value: float) -> str:
    return format_duration(value) if value >= 1 else f"{value:.1f}s"


def _allowance(name: str, allowance: Allowance, unit: str, per: str) -> str:
    planned = f"{allowance.planned:g}{unit}"
    if allowance.limit is None:
        return f"{name}: {planned} planned (no Budget limit)"
    verdict = "fits" if allowance.fits else "EXCEEDS the budget: the rest will be blocked"
    return (f"{name}: {planned} planned, {allowance.used:g}{unit} used of "
            f"{allowance.limit:g}{unit} {per} -> {verdict}")


def spend_lines(spent: Spend) -> list[str]:
    """The plan's cost, for the text plan."""
    if not (spent.gates or spent.holds or spent.restarts.planned or spent.promotions.planned):
        return []
    out = [f"Cost of this plan (Budget {spent.budget or 'none declared'}):"]
    for gate in spent.gates:
        head = f"  gate {gate.gauntlet} for Model {gate.model} sha256:{gate.digest[:12]}"
        if gate.remembered:
            out.append(f"{head}: verdict remembered ({gate.remembered}), no games to play")
            continue
        rate = "" if gate.seconds_per_game is None else \
            f"; measured {gate.seconds_per_game:.3g} s and {gate.gpu_seconds_per_game:.3g} " \
            "GPU-s per game"
        out.append(f"{head}: ~{gate.expected_games} games for a model at the bar, "
                   f"~{gate.expected_games_at_margin} at bar + margin, at most "
                   f"{gate.max_games}{rate}")
        expected = gate.expected_gpu_seconds
        out.append(f"    GPU-seconds: at most {_seconds(gate.worst_gpu_seconds)}; "
                   + ("expected unknown until it has run once" if expected is None
                      else f"about {_seconds(expected)} expected"))
    out.append("  " + _allowance("GPU-seconds", spent.gpu_seconds, " s", "today"))
    out.append("  " + _allowance("promotions", spent.promotions, "", "today"))
    out.append("  " + _allowance("restarts", spent.restarts, "", "in the last hour"))
    for hold in spent.holds:
        out.append(f"  soak {format_duration(hold.seconds)}: {hold.subject} on {hold.target}")
    if spent.longest_seconds:
        out.append(f"  the last target is done after about "
                   f"{format_duration(spent.longest_seconds)} of soaks (plus the gates)")
    return out


def spend_json(spent: Spend) -> dict[str, Any]:
    def allowance(value: Allowance) -> dict[str, Any]:
        return {"planned": value.planned, "used": value.used, "limit": value.limit,
                "fits": value.fits}

    return {
        "budget": spent.budget,
        "gates": [{"model": g.model, "gauntlet": g.gauntlet, "digest": g.digest,
                   "targets": list(g.targets), "remembered": g.remembered,
                   "expectedGamesAtBar": g.expected_games,
                   "expectedGamesAtBarPlusMargin": g.expected_games_at_margin,
                   "maxGames": g.max_games, "secondsPerGame": g.seconds_per_game,
                   "gpuSecondsPerGame": g.gpu_seconds_per_game,
                   "expectedGpuSeconds": g.expected_gpu_seconds,
                   "worstCaseGpuSeconds": g.worst_gpu_seconds} for g in spent.gates],
        "soaks": [{"target": h.target, "subject": h.subject, "seconds": h.seconds}
                  for h in spent.holds],
        "gpuSeconds": {**allowance(spent.gpu_seconds),
                       "expected": spent.expected_gpu_seconds},
        "promotions": allowance(spent.promotions),
        "restarts": allowance(spent.restarts),
        "longestSeconds": spent.longest_seconds,
    }
