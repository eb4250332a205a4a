"""One pass as ordered steps, the same for ``plan``, ``apply`` and the daemon.

::

    source   fetch the branch, accept its tip (descends, signed), snapshot it
    desired  load and validate (cached by blob id: an unchanged file is never parsed twice)
    observe  every target through its fleet (the registry in app.py)
    plan     pure: (desired, observed, the journal's history, now) -> ordered actions
    execute  the plan's ready actions; a pointer conflict stops it: observe and plan again
             (at most REPLANS times)

``plan`` stops after the plan step, with the same history the daemon would use, so what a
reviewer approves is what runs. :func:`run_pass` never raises: every exception becomes an
outcome through ``errors.classify``, is journaled with the pass and keeps the daemon alive.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

from reconciler.app import Wiring, configure_sandbox, gauntlet_jobs, git_source
from reconciler.desired.documents import Desired, Target
from reconciler.desired.loader import load_desired
from reconciler.diagnostics import InvalidInput
from reconciler.errors import Disposition, classify
from reconciler.execute.executor import ActionResult as ActionResultRecord
from reconciler.execute.executor import Executor, Hooks, PassReport
from reconciler.execute.interrupts import ActionInterrupt
from reconciler.gauntlet.budgets import gate_costs
from reconciler.journal import Journal
from reconciler.local.roots import check_roots
from reconciler.plan.observed import ObservedTarget
from reconciler.plan.planner import Action, History, Plan, address_of, observation_request, plan
from reconciler.plan.render import render_json, render_text, text_diff
from reconciler.plan.spend import Spend
from reconciler.vocabulary import ActionResult, JournalAction, Op, PassResult, Phase

REPLANS = 3  # a pointer conflict re-reads and re-plans at most this often in one pass


@dataclass(frozen=True)
class PlannedPass:
    """A plan with what it was made from: what ``plan`` prints and ``apply`` executes."""

    plan: Plan
    desired: Desired
    observed: Mapping[str, ObservedTarget]
    wiring: Wiring

    def live_content(self, target: Target, address: str) -> bytes | None:
        """What is at an address now, for diffs."""
        return self.wiring.fleet(target).read(target, address)


@dataclass(frozen=True)
class PassOutcome:
    """How a pass ended."""

    result: PassResult
    message: str
    revision: str | None = None
    report: PassReport | None = None
    retry_in: float | None = None  # seconds until a waiting action may run
    targets: tuple[Target, ...] = ()  # the revision's targets (the daemon watches some)
    quarantined: int = 0  # store objects that failed verification during the pass

    def status_line(self) -> str:
        where = f"{self.revision.split('@')[0]}@{self.revision.split(':')[-1][:12]} " \
            if self.revision else ""
        return f"{where}{self.result}: {self.message}"


def load(wiring: Wiring) -> Desired:
    """Steps source and desired. Raises InvalidInput or a ReconcilerError. An unchanged
    folder (the same tree, whatever the commit) reuses the last desired state; the rules
    that need the settings (where local roots may be) are checked every time."""
    snapshot = (wiring.source or git_source(wiring.settings)).fetch().snapshot
    if wiring.loaded is not None and wiring.loaded[0] == snapshot.tree_id:
        desired = replace(wiring.loaded[1], revision=snapshot.revision)
    else:
        try:
            desired = load_desired(snapshot, wiring.desired_cache)
        finally:
            wiring.desired_cache.save()
        wiring.loaded = (snapshot.tree_id, desired)
    problems = check_roots(desired, wiring.settings, snapshot.display_prefix)
    if problems:
        raise InvalidInput(problems)
    return desired


def observe(wiring: Wiring, desired: Desired) -> dict[str, ObservedTarget]:
    observed = {}
    for target in desired.targets.values():
        files, pointers = observation_request(desired, target)
        observed[target.name] = wiring.fleet(target).observe(target, files, pointers)
    wiring.finish_observing()
    return observed


def plan_pass(wiring: Wiring, history: History, now: float) -> PlannedPass:
    """Source, desired, observe and plan. Raises InvalidInput or a ReconcilerError."""
    desired = load(wiring)
    observed = observe(wiring, desired)
    return PlannedPass(plan(desired, observed, history, now), desired, observed, wiring)


def render_planned(planned: PlannedPass, output: str,
                   diff_targets: frozenset[str] | None = None, *,
                   spent: Spend | None = None) -> str:
    """What ``plan`` prints (``output`` text or json), with the diff of each delivered file
    against what is live (on ``diff_targets`` only, when given), each gate's cost and what
    the plan will spend (costs.plan_spend); the daemon's ``POST /plan`` answers the same."""
    diffs: dict[Action, str | None] = {}
    for action in planned.plan.changes:
        if action.kind == "Model" or action.op in (Op.DELETE, Op.RECALL) or (
                diff_targets is not None and action.target not in diff_targets):
            continue
        target = planned.desired.targets[action.target]
        obj = (planned.desired.strategies.get(action.name) if action.kind == "Strategy"
               else planned.desired.configs.get(action.name))
        if obj is None:
            continue
        address = address_of(obj, target)
        old = None if action.current is None else planned.live_content(target, address)
        diffs[action] = text_diff(old, planned.desired.read_content(obj), address)
    locations = {name: seen.location for name, seen in planned.observed.items()}
    gauntlets = planned.desired.gauntlets
    costs = {model.name: gate_costs(gauntlets[model.gauntlet])
             for model in planned.desired.models.values()
             if model.gauntlet is not None and model.gauntlet in gauntlets}
    render = render_json if output == "json" else render_text
    return render(planned.plan, diffs, locations, costs, spent)


def run_pass(wiring: Wiring, journal: Journal, stop: threading.Event, *,
             hooks: Hooks | None = None) -> PassOutcome:
    """One whole pass. Never raises: bad input, faults and defects become the outcome."""
    try:
        pass_id = journal.begin_pass(None)
    except Exception as error:
        outcome = classify(error)
        return PassOutcome(_result(outcome.disposition), f"{outcome.reason}: {outcome.message}")
    try:
        result = _run(wiring, journal, stop, hooks, pass_id)
    except Exception as error:
        outcome = classify(error)
        result = PassOutcome(_result(outcome.disposition), f"{outcome.reason}: {outcome.message}")
    try:
        result = replace(result, quarantined=_report_quarantined(wiring, journal, pass_id))
        journal.end_pass(pass_id, result.result, result.message, result.revision)
    except Exception as error:
        outcome = classify(error)
        result = PassOutcome(PassResult.TRANSIENT, f"{result.message}; and the journal "
                             f"refused the pass's end: {outcome.message}", result.revision,
                             result.report, result.retry_in, result.targets)
    return result


def _report_quarantined(wiring: Wiring, journal: Journal, pass_id: int) -> int:
    """Store objects that failed verification during the pass: journaled for ``status``;
    how many."""
    count = 0
    while wiring.store.quarantined:
        digest, why = wiring.store.quarantined.pop(0)
        journal.record(JournalAction.QUARANTINE, Phase.DONE, pass_id=pass_id,
                       key=("-", "Store", digest[:12]), detail={"digest": digest, "why": why})
        count += 1
    return count


def _result(disposition: Disposition) -> PassResult:
    return PassResult.TRANSIENT if disposition is Disposition.TRANSIENT else PassResult.STALLED


def _run(wiring: Wiring, journal: Journal, stop: threading.Event, hooks: Hooks | None,
         pass_id: int) -> PassOutcome:
    # Where this pass's repository code runs (the settings may have been reloaded); a check
    # running as a cluster Job is deleted when the pass is stopped.
    configure_sandbox(wiring.settings, wiring.connections, stop)
    # One interrupt for the pass's actions (executor.py): gauntlet Jobs end with the action.
    interrupt = ActionInterrupt(stop)
    jobs = gauntlet_jobs(wiring.settings, wiring.connections, interrupt)
    outcome = PassOutcome(PassResult.STALLED, "no pass ran")
    acted: list[ActionResultRecord] = []  # what earlier rounds of this pass did
    for _ in range(REPLANS):
        try:
            planned = plan_pass(wiring, journal.history(time.time()), time.time())
        except InvalidInput as error:
            first = error.diagnostics[0].format() if error.diagnostics else ""
            count = len(error.diagnostics)
            return PassOutcome(PassResult.INVALID, f"{count} error{'s' if count != 1 else ''} "
                               f"in the desired state, fleet unchanged; first: {first}")
        report = Executor(wiring.fleet, wiring.store, journal, interrupt, hooks=hooks,
                          gauntlet_jobs=jobs, inconclusive=wiring.settings.inconclusive,
                          artifacts=wiring.settings.artifacts,
                          analysis=wiring.settings.analysis,
                          ).execute(planned.plan, planned.desired, pass_id)
        report = _with_earlier(report, acted)
        acted = [r for r in report.results if r.result in _ACTED]
        outcome = summarize(report, planned.plan.errors, all(
            seen.transient for seen in planned.observed.values() if seen.error),
            tuple(planned.desired.targets.values()))
        if not report.replan or stop.is_set():
            break
    return outcome


_ACTED = (ActionResult.APPLIED, ActionResult.ROLLED_BACK, ActionResult.FAILED)


def _with_earlier(report: PassReport, acted: list[ActionResultRecord]) -> PassReport:
    """A pass planned again (a pointer conflict, a wave that failed) reports what its
    earlier rounds did too: the rollback that caused the recalls is part of the story."""
    if not acted:
        return report
    keys = {r.action.key for r in acted}
    return replace(report, results=(*acted, *(r for r in report.results
                                              if r.action.key not in keys
                                              or r.result in _ACTED)))


def summarize(report: PassReport, errors: Mapping[str, str], errors_transient: bool = False,
              targets: tuple[Target, ...] = ()) -> PassOutcome:
    """``errors_transient``: every target that could not be observed had an outage (API
    5xx, timeouts); the pass backs off instead of waiting for the resync."""
    counts = Counter(r.result for r in report.results)
    waits = [r.action.not_before for r in report.results
             if r.result is ActionResult.WAITING and r.action.not_before]
    retry_in = max(0.0, min(waits) - time.time()) if waits else None
    parts = [f"{counts[name]} {name}" for name in ActionResult if counts[name]]
    message = ", ".join(parts) or "nothing declared"
    problems = [r for r in report.results
                if r.result in (ActionResult.ROLLED_BACK, ActionResult.FAILED,
                                ActionResult.BLOCKED, ActionResult.CONFLICT)]
    if problems:
        first = problems[0]
        message += (f"; {first.action.kind}/{first.action.name} on {first.action.target}: "
                    f"{first.message}")
    if errors:
        message += "; " + "; ".join(f"{t}: {e}" for t, e in errors.items())
    outage = (errors or problems) and (errors_transient or not errors) \
        and all(r.transient for r in problems)
    if outage and not report.stopped:
        result = PassResult.TRANSIENT
    elif report.stopped or problems or errors:
        result = PassResult.FAILED
    elif counts[ActionResult.APPLIED]:
        result = PassResult.CHANGED
    elif counts[ActionResult.WAITING]:
        result = PassResult.WAITING
    else:
        result = PassResult.CONVERGED
    return PassOutcome(result, message, report.revision, report, retry_in, targets)
