"""Runs a plan's ready actions: gates, change, restart, health, undo.

The steps are the same on every target; a place (places.py; local/place.py, kube/place.py)
carries them out on a local directory tree or on a Kubernetes namespace.

Every step is journaled before it happens and after. A restart or health check that fails
puts back the last healthy content (or the previous pointer) and restarts again; the
revision is marked failed and is not retried until a new commit. Budgets were decided by
the planner, so an exhausted budget never leaves a change half-applied; a repair whose
restart the budget or a window defers is written now and owes its restart
(``Journal.owe_restart``). Any exception a step raises is sorted by ``errors.classify``
into this action's outcome, and the pass goes on with the next action.

Every wait of an action (check, soak, rollout, gauntlet, download) is on the action's
:class:`~reconciler.execute.interrupts.ActionInterrupt`: a stop undoes the change as
before; a suspension of the target (looked up again right before each action) or a newer
revision of the object leaves what is in place as it is, neither rolled back nor marked
failed (interrupts.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.analysis.judge import Verdict
from reconciler.analysis.runner import (
    AnalysisReport,
    AnalysisRunner,
    AnalysisUnavailable,
    Halt,
    Prepared,
    Subject,
)
from reconciler.artifacts.fetch import ArtifactMissing, ArtifactUnavailable, FetchLimits, fetch
from reconciler.desired.documents import (
    AnalysisCheck,
    Delivered,
    Desired,
    Health,
    Model,
    Restart,
    Strategy,
    Target,
)
from reconciler.digests import VerificationFailed
from reconciler.errors import Disposition, ReconcilerError, classify
from reconciler.events import Event, EventType
from reconciler.execute.interrupts import ActionInterrupt, Cause, Running
from reconciler.gauntlet.runner import GauntletRunner, JobLauncher
from reconciler.journal import Journal
from reconciler.places import CommandResult, ContentStore, Fleet, Place
from reconciler.plan.planner import ALL_TARGETS, Action, Plan, address_of
from reconciler.redaction import redact
from reconciler.settings import AnalysisSettings, ArtifactSettings
from reconciler.vocabulary import ActionResult as Result
from reconciler.vocabulary import ActionStatus, Condition, JournalAction, Op, Phase, Reason


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    result: Result
    message: str
    transient: bool = False  # an outage: worth a retry with backoff


@dataclass(frozen=True, slots=True)
class Checked(CommandResult):
    """A restart and check whose change was also analysed (``analysis``: its report)."""

    analysis: AnalysisReport | None = None


@dataclass(frozen=True)
class PassReport:
    """``replan``: a pointer changed under us; the pass stopped so it can be re-planned."""

    revision: str
    results: tuple[ActionResult, ...]
    stopped: bool
    replan: bool = False

    def count(self, *results: Result) -> int:
        return sum(1 for r in self.results if r.result in results)


@dataclass
class Hooks:
    """What the daemon wants to hear about (metrics, the systemd STATUS line)."""

    rollback: Callable[[str], None] = lambda kind: None
    drift: Callable[[str], None] = lambda kind: None
    progress: Callable[[str], None] = lambda text: None
    gauntlet_games: Callable[[str, int], None] = lambda opponent, games: None
    # An artifact's bytes as they arrive (model, done, total; total 0: unknown), for a
    # terminal's rate and ETA; without it a fetch is told through ``progress`` as text.
    fetching: Callable[[str, int, int], None] | None = None
    event: Callable[[Event], None] = lambda event: None  # events.py: notifications, statuses
    # The action under way and what ends it (None between actions): the daemon fires it on
    # a suspension of its target or a newer revision of its object.
    running: Callable[[Running | None, ActionInterrupt], None] = lambda running, interrupt: None


class Executor:
    def __init__(self, fleet_of: Callable[[Target], Fleet], store: ContentStore,
                 journal: Journal, stop: threading.Event, *, hooks: Hooks | None = None,
                 clock: Callable[[], float] = time.time,
                 gauntlet_jobs: JobLauncher | None = None, inconclusive: str = "hold",
                 artifacts: ArtifactSettings | None = None,
                 analysis: AnalysisSettings | None = None) -> None:
        self._fleet_of = fleet_of
        self._analysis = AnalysisRunner(analysis or AnalysisSettings())
        self._inconclusive = inconclusive  # settings gates.inconclusive: hold or reject
        self._artifacts = artifacts or ArtifactSettings()
        self._store = store
        self._journal = journal
        # ``stop`` may already be the pass's interrupt (passes.py: gauntlet Jobs share it).
        self._interrupt = stop if isinstance(stop, ActionInterrupt) else ActionInterrupt(stop)
        self._stop = self._interrupt.stop
        self._hooks = hooks or Hooks()
        self._clock = clock
        self._gauntlets = GauntletRunner(journal, store, progress=self._hooks.progress,
                                         games=self._hooks.gauntlet_games, jobs=gauntlet_jobs,
                                         stop=self._interrupt)

    def place(self, target: Target) -> Place:
        return self._fleet_of(target).place(target)

    def execute(self, plan: Plan, desired: Desired, pass_id: int) -> PassReport:
        results: list[ActionResult] = []
        for action in plan.actions:
            if self._stop.is_set():
                return PassReport(desired.revision, tuple(results), stopped=True)
            self._interrupt.reset()  # what ended the last action is not this one's
            result = self._one(action, desired, pass_id)
            results.append(result)
            # A pointer changed under us, a newer revision ended an action, or a revision
            # failed in a wave (the targets that took it give it back now): plan again.
            if result.result is Result.CONFLICT or self._interrupt.cause is Cause.SUPERSEDED \
                    or self._wave_failed(result, desired.revision):
                return PassReport(desired.revision, tuple(results), stopped=False, replan=True)
        return PassReport(desired.revision, tuple(results), stopped=False)

    def _wave_failed(self, result: ActionResult, revision: str) -> bool:
        """This revision just failed on a target of a chain of waves: plan again now, so
        that the targets that took it give it back in this same pass (``recall``)."""
        action = result.action
        if action.wave is None or action.op is Op.RECALL or action.drift or \
                result.result not in (Result.ROLLED_BACK, Result.FAILED):
            return False
        known = self._journal.object(action.key)
        return known is not None and (known["failed_digest"], known["failed_revision"]) \
            == (action.desired, revision)

    def _one(self, action: Action, desired: Desired, pass_id: int) -> ActionResult:
        # None too: a target whose ``after`` was removed is in no wave any more.
        self._journal.wave(action.key, action.wave.to_json() if action.wave else None)
        if action.op is Op.NOOP:
            known = self._journal.object(action.key)
            if known is not None and known["status"] not in (None, Condition.READY):
                self._emit(EventType.APPLIED, action, desired.revision, reason="InSync",
                           message=f"in sync again (was {known['status']}: {known['reason']})")
            self._journal.applied(action.key, action.desired, desired.revision, self._clock())
            return ActionResult(action, Result.IN_SYNC, "in sync")
        if action.status is not ActionStatus.READY:
            return self._not_ready(action, desired.revision)
        self._interrupt.reset()
        # Registered before the suspension is looked up: a suspension journaled after the
        # look finds the action registered and fires its interrupt.
        self._hooks.running(Running(action.target, action.kind, action.name, action.desired,
                                    desired.revision), self._interrupt)
        try:
            suspension = self._journal.suspensions()
            held = suspension.get(action.target) or suspension.get(ALL_TARGETS)
            if held is not None:  # suspended since the plan was made
                message = held.describe()
                self._journal.condition(action.key, Condition.RECONCILING, Reason.SUSPENDED,
                                        message)
                return ActionResult(action, Result.WAITING, message)
            return self._started(action, desired, pass_id)
        finally:
            self._hooks.running(None, self._interrupt)

    def _started(self, action: Action, desired: Desired, pass_id: int) -> ActionResult:
        self._hooks.progress(f"{action.op} {action.kind}/{action.name} on {action.target}")
        where = action.target
        try:
            place = self.place(desired.targets[action.target])
            where = place.where
            if action.op is Op.DELETE:
                return self._prune(action, place, desired, pass_id)
            if action.op is Op.RECALL:
                return self._recall(action, place, desired, pass_id)
            if action.kind == "Model":
                return self._flip(action, desired.models[action.name], place, desired, pass_id)
            obj: Delivered = (desired.strategies[action.name] if action.kind == "Strategy"
                              else desired.configs[action.name])
            return self._deliver(action, obj, place, desired, pass_id)
        except Exception as error:
            return self._fault(action, error, where, desired.revision, pass_id)

    def _not_ready(self, action: Action, revision: str) -> ActionResult:
        status = Condition.STALLED if action.status is ActionStatus.BLOCKED \
            else Condition.RECONCILING
        message = action.message or action.status
        if action.not_before is not None:
            message += time.strftime(" (until %Y-%m-%d %H:%M:%S %Z)",
                                     time.localtime(action.not_before))
        known = self._journal.object(action.key) if action.reason is Reason.FAILED_BEFORE \
            else None
        if known and known["reason"] == Reason.ANALYSIS_INCONCLUSIVE \
                and known["failed_digest"] == action.desired:
            # Held by an inconclusive analysis: keep that status, it says what to do.
            return ActionResult(action, Result.BLOCKED, str(known["message"]))
        if known and known["failed_reason"]:
            message += f" (it failed: {known['failed_reason']})"  # keep the why in view
        if action.reason is Reason.BUDGET_EXHAUSTED or status is Condition.STALLED:
            self._emit_if_new(EventType.BUDGET_EXHAUSTED if action.reason
                              is Reason.BUDGET_EXHAUSTED else EventType.STALLED, action,
                              status, action.reason, message, revision)
        self._journal.condition(action.key, status, action.reason, message)
        return ActionResult(action, Result(action.status), message)

    def _fault(self, action: Action, error: Exception, where: str, revision: str,
               pass_id: int) -> ActionResult:
        """A step raised: a host, cluster or tool fault (or a defect). No failure mark: the
        commit is not at fault. A pointer conflict stops the pass so that it is re-read
        and re-planned."""
        outcome = classify(error)
        message = f"{action.location} on {where}: {outcome.reason}: {outcome.message}"
        self._journal.record(JournalAction.ERROR, Phase.FAILED, pass_id=pass_id,
                             revision=revision, key=action.key,
                             detail={"error": message, "reason": outcome.reason})
        conflict = outcome.disposition is Disposition.REPLAN
        status = Condition.RECONCILING if conflict or outcome.transient else Condition.STALLED
        if status is Condition.STALLED:
            self._emit_if_new(EventType.STALLED, action, status, outcome.reason, message,
                              revision)
        self._journal.condition(action.key, status, outcome.reason, message)
        return ActionResult(action, Result.CONFLICT if conflict else Result.FAILED, message,
                            transient=outcome.transient)

    def _prune(self, action: Action, place: Place, desired: Desired,
               pass_id: int) -> ActionResult:
        intent = self._journal.intent(JournalAction.PRUNE, action.key, pass_id=pass_id,
                                      revision=desired.revision,
                                      detail={"location": action.location})
        place.remove(action.name, desired.revision)
        self._journal.outcome(intent, Phase.DONE)
        self._journal.condition(action.key, Condition.READY, Reason.PRUNED,
                                f"deleted {action.location}: no longer declared")
        return ActionResult(action, Result.APPLIED, f"pruned {action.location}")

    # Waves.

    def _recall(self, action: Action, place: Place, desired: Desired,
                pass_id: int) -> ActionResult:
        """Take back a revision that failed on another target of this one's waves: put
        back what this target had before it (``action.desired``; "" for nothing), restart
        and check, then mark the revision failed here. Journaled before and after; the
        write is idempotent, so a crash anywhere leaves the recall owed (the journal still
        says this target took the revision) and the next pass does it again."""
        taken, back_to, revision = action.current, action.desired or None, desired.revision
        model = desired.models.get(action.name) if action.kind == "Model" else None
        obj: Delivered | Model = model if model is not None else (
            desired.strategies[action.name] if action.kind == "Strategy"
            else desired.configs[action.name])
        address = address_of(obj, place.target)
        mode = None if isinstance(obj, Model) else obj.deliver.mode
        link = self._recall_link(action, taken) if model is not None else None
        if back_to is not None and self._store.verified(back_to) is None:
            return self._recall_held(action, back_to, revision)
        intent = self._journal.intent(JournalAction.RECALL, action.key, pass_id=pass_id,
                                      revision=revision,
                                      detail={"path": address, "from": taken, "to": back_to,
                                              "link": link, "reason": action.message})
        try:
            if back_to is not None:
                self._store.require(back_to)  # a recall skips gates, never the digest
            if model is not None:
                place.point_back(model, link, revision)
            elif back_to is None:
                place.remove(address, revision)
            else:
                place.write(address, self._store.read(back_to), mode, revision)
        except Exception as error:
            self._journal.outcome(intent, Phase.FAILED, {"error": str(error)})
            raise
        after = self._restart_and_check(action, place, obj.restart, obj.health, pass_id,
                                        revision, back_to, undoing=True)
        self._journal.outcome(intent, Phase.DONE if after.ok else Phase.FAILED,
                              {"detail": after.detail})
        message = (f"recalled: {action.message}; put back "
                   + (f"sha256:{back_to[:12]}" if back_to else "nothing (removed)"))
        if not after.ok:
            message += f"; it is not healthy either: {after.detail}"
        self._journal.recalled(action.key, taken or "", revision, back_to, message,
                               healthy=after.ok)
        self._hooks.rollback(action.kind)
        self._hooks.event(Event(EventType.ROLLED_BACK, action.target, revision, action.kind,
                                action.name, digest=taken, reason=Reason.WAVE_FAILED,
                                message=message))
        return ActionResult(action, Result.ROLLED_BACK, message)

    def _recall_held(self, action: Action, back_to: str, revision: str) -> ActionResult:
        """What this target had before was collected or quarantined since: nothing else is
        put there (a recall never guesses); it holds, saying what a person can do."""
        message = (f"{action.message}, but what this target had before it (sha256:"
                   f"{back_to[:12]}) is no longer in the store (collected or quarantined): "
                   "put it back by hand, or commit a fix")
        self._emit_if_new(EventType.STALLED, action, Condition.STALLED, Reason.WAVE_FAILED,
                          message, revision)
        self._journal.condition(action.key, Condition.STALLED, Reason.WAVE_FAILED, message)
        return ActionResult(action, Result.BLOCKED, message)

    def _recall_link(self, action: Action, taken: str | None) -> str | None:
        """The pointer form of what the flip that brought ``taken`` replaced (the planner
        chose its digest from the same intent)."""
        for detail in self._journal.intents(JournalAction.FLIP, action.key):
            if detail.get("to") == taken and not detail.get("drift") \
                    and _flip_origin(detail, self._store)[1] != taken:
                return _digest_or_none(detail.get("from"))
        return None

    # Strategies and Configs.

    def _deliver(self, action: Action, obj: Delivered, place: Place, desired: Desired,
                 pass_id: int) -> ActionResult:
        address = address_of(obj, place.target)
        content = desired.read_content(obj)
        revision = desired.revision
        if action.drift:
            self._hooks.drift(action.kind)
        replaced = self._replaced(action)
        if (ended := self._ended(action, desired, "nothing was written")) is not None:
            return ended
        prepared = self._prepare_analysis(action, obj.analysis, obj.restart, place, pass_id,
                                          desired, action.desired, JournalAction.DELIVER)
        if isinstance(prepared, ActionResult):
            return prepared  # nothing was changed
        intent = self._journal.intent(JournalAction.DELIVER, action.key, pass_id=pass_id,
                                      revision=revision,
                                      detail={"path": address, "from": replaced,
                                              "to": action.desired, "drift": action.drift,
                                              **_baselines(prepared)})
        self._journal.attempted(action.key, action.desired, revision)
        try:
            place.preserve(address)
            self._store.put(content)
            place.write(address, content, obj.deliver.mode, revision)
        except OSError as error:
            # The host, not the commit, is at fault: no failure mark, the next pass retries
            # once the operator has fixed it.
            message = f"cannot write {address} under {place.where}: {error}"
            self._journal.outcome(intent, Phase.FAILED, {"error": message})
            self._emit_if_new(EventType.STALLED, action, Condition.STALLED,
                              Reason.WRITE_FAILED, message, revision)
            self._journal.condition(action.key, Condition.STALLED, Reason.WRITE_FAILED, message)
            return ActionResult(action, Result.FAILED, message)
        except Exception as error:
            self._journal.outcome(intent, Phase.FAILED, {"error": str(error)})
            raise
        self._journal.outcome(intent, Phase.DONE)
        if action.restart_deferred:
            return self._owe_restart(action, revision, f"restored {action.location}")
        self._emit(EventType.PROGRESSING, action, revision,
                   message=f"delivered {action.location}; restarting and checking")
        check = self._restart_and_check(action, place, obj.restart, obj.health, pass_id,
                                        revision, action.desired, analysis=prepared)
        if check.ok:
            self._journal.applied(action.key, action.desired, revision, self._clock())
            self._emit(EventType.DRIFT_HEALED if action.drift else EventType.APPLIED, action,
                       revision, reason=Reason.CONVERGED,
                       message=f"delivered {action.location}: {check.detail}")
            return ActionResult(action, Result.APPLIED, f"delivered {action.location}")
        if (ended := self._ended(action, desired, f"{action.location} is left as it is, "
                                 "unverified: not rolled back, not marked failed")) is not None:
            return ended
        held = self._hold_inconclusive(action, check, revision, "the new content stays in "
                                       f"{action.location}")
        if held is not None:
            return held
        if isinstance(obj, Strategy) and obj.on_failure == "hold":
            self._journal.failed(action.key, action.desired, revision,
                                 Reason.HEALTH_CHECK_FAILED,
                                 f"{check.detail}; held as configured (onFailure: hold)")
            self._emit(EventType.STALLED, action, revision, reason=Reason.HEALTH_CHECK_FAILED,
                       message=f"{check.detail}; held as configured (onFailure: hold)")
            return ActionResult(action, Result.FAILED, check.detail)
        back_to = self._last_healthy(action, replaced)
        undo = self._journal.intent(JournalAction.ROLLBACK, action.key, pass_id=pass_id,
                                    revision=revision,
                                    detail={"path": address, "to": back_to,
                                            "reason": check.detail})
        if back_to is None:
            place.remove(address, revision)
        else:
            place.write(address, self._store.read(back_to), None, revision)
        after = self._restart_and_check(action, place, obj.restart, obj.health, pass_id,
                                        revision, back_to, undoing=True)
        self._journal.outcome(undo, Phase.DONE if after.ok else Phase.FAILED,
                              {"detail": after.detail})
        return self._undone(action, revision, check, after, f"rolled back to "
                            f"{'nothing (removed)' if back_to is None else back_to[:12]}",
                            action.desired)

    def _owe_restart(self, action: Action, revision: str, done: str) -> ActionResult:
        """The repair is in place; its restart waits for the budget or the window."""
        why = action.restart_deferred or ""
        self._journal.owe_restart(action.key, action.desired)
        message = (f"{done}; the restart is deferred ({why}): the consumer still runs what it "
                   "loaded")
        self._journal.condition(action.key, Condition.RECONCILING, Reason.RESTART_DEFERRED,
                                message)
        return ActionResult(action, Result.WAITING, message)

    def _undone(self, action: Action, revision: str, check: CommandResult,
                after: CommandResult, how: str, digest: str) -> ActionResult:
        """After an undo: a failure marks the revision; a stop request does not, so the
        change is simply tried again when the daemon comes back."""
        if self._stop.is_set():
            self._journal.condition(action.key, Condition.RECONCILING, Reason.INTERRUPTED,
                                    f"stopped before the health check passed; {how} "
                                    f"({after.detail})")
            return ActionResult(action, Result.SKIPPED,
                                f"interrupted by a stop request; {how} ({after.detail})")
        if not after.ok:
            how += f"; the previous state is back, but it is not healthy either: {after.detail}"
        self._journal.failed(action.key, action.desired, revision, Reason.ROLLED_BACK,
                             f"{check.detail}; {how}")
        self._hooks.rollback(action.kind)
        if isinstance(check, Checked) and check.analysis is not None \
                and check.analysis.verdict is Verdict.FAIL:
            self._analysis_event(EventType.ROLLED_BACK, action, revision, digest,
                                 Reason.ANALYSIS_FAILED, f"{check.detail}; {how}",
                                 check.analysis)
        else:
            self._emit(EventType.ROLLED_BACK, action, revision, reason=Reason.ROLLED_BACK,
                       message=f"{check.detail}; {how}",
                       values={"check": check.detail, "previousHealthy": after.ok})
        return ActionResult(action, Result.ROLLED_BACK, f"{check.detail}; {how}")

    def _replaced(self, action: Action) -> str | None:
        """The content this change replaces. When the live content already is the new one
        (an attempt stopped after its write, or held content a new commit retries), that
        is the ``from`` of the intent that wrote it: the journal's, never the live state's,
        and never the digest being undone."""
        if action.current != action.desired:
            return action.current
        for detail in self._journal.intents(JournalAction.DELIVER, action.key):
            if detail.get("to") == action.desired and detail.get("from") != action.desired:
                return _digest_or_none(detail.get("from"))
        return None

    def _last_healthy(self, action: Action, replaced: str | None) -> str | None:
        """The content to return to: the last healthy digest, else what the change
        replaced, whichever the store still holds with its bytes intact."""
        known = self._journal.object(action.key)
        healthy = known["healthy_digest"] if known else None
        if healthy and healthy != action.desired and self._store.verified(healthy) is not None:
            return str(healthy)
        if replaced is not None:
            self._store.require(replaced)  # preserved before the write; proven now
        return replaced

    def _restart_and_check(self, action: Action, place: Place, restart: Restart | None,
                           health: Health | None, pass_id: int, revision: str,
                           digest: str | None, *, undoing: bool = False,
                           analysis: Prepared | None = None) -> CommandResult:
        """Restart (a command, or the digest into a Deployment's pod template), then check
        (a health command or probe, or the rollout) and, for a change with ``analysis``,
        analyse it meanwhile. ``digest`` is what is now in place. Undoing after a stop
        request restarts but skips the check: nobody waits for it."""
        if restart is not None:
            intent = self._journal.intent(JournalAction.RESTART, action.key, pass_id=pass_id,
                                          revision=revision,
                                          detail={**place.restart_detail(restart),
                                                  "undoing": undoing})
            try:
                result = place.restart(action.kind, action.name, restart, digest, revision)
            except Exception as error:  # the next pass finishes it (History.unfinished)
                self._journal.outcome(intent, Phase.FAILED, {"error": str(error)})
                raise
            self._journal.outcome(intent, Phase.DONE if result.ok else Phase.FAILED,
                                  {"detail": result.detail, "output": result.output_tail})
            if not result.ok:
                return CommandResult(False, f"restart failed: {result.detail}",
                                     result.output_tail)
        if analysis is not None and not undoing:
            return self._check_and_analyse(action, place, restart, health, pass_id, revision,
                                           digest, analysis)
        return self._check(action, place, restart, health, pass_id, revision, digest,
                           undoing, self._interrupt)

    def _check(self, action: Action, place: Place, restart: Restart | None,
               health: Health | None, pass_id: int, revision: str, digest: str | None,
               undoing: bool, stop: threading.Event) -> CommandResult:
        """The health check (a command or probe, or the rollout), journaled."""
        if not place.has_check(restart, health):
            return CommandResult(True, "no health check declared")
        if undoing and self._interrupt.is_set():
            return CommandResult(True, "its health check was skipped: "
                                 + ("the daemon is stopping"
                                    if self._interrupt.cause in (Cause.STOP, None)
                                    else f"{self._interrupt.cause} during the undo"))
        intent = self._journal.intent(JournalAction.HEALTH, action.key, pass_id=pass_id,
                                      revision=revision, detail={"undoing": undoing})
        try:
            result = place.check(action.kind, action.name, restart, health, digest, revision,
                                 stop)
        except Exception as error:
            self._journal.outcome(intent, Phase.FAILED, {"error": str(error)})
            raise
        ended = not result.ok and self._interrupt.cause in (Cause.SUSPENDED, Cause.SUPERSEDED)
        self._journal.outcome(intent, Phase.INTERRUPTED if ended
                              else Phase.DONE if result.ok else Phase.FAILED,
                              {"detail": self._interrupt.why if ended else result.detail})
        if not result.ok:
            return CommandResult(False, f"health check failed: {result.detail}",
                                 result.output_tail)
        return result

    # Analysis during the soak (docs/analysis.md).

    def _prepare_analysis(self, action: Action, checks: tuple[AnalysisCheck, ...],
                          restart: Restart | None, place: Place, pass_id: int,
                          desired: Desired, digest: str, change: JournalAction,
                          ) -> Prepared | ActionResult | None:
        """Before the change: baselines taken, every query asked once, log readers started.
        None when there is nothing to analyse: no checks, or a repair (drift put back, a
        deferred restart), whose content is the known-good one. A failure here changes
        nothing: an ActionResult says why. Finishing a change already in place (a crash
        after its write) keeps the baselines taken before that write (``change``'s intent
        holds them): measured now, they would be the new content's own values."""
        if not checks or action.drift or action.restart_deferred:
            return None
        revision = desired.revision
        subject = Subject(action.target, action.kind, action.name, revision, digest)
        try:
            workload = place.workload(action.kind, action.name, restart, digest, revision)
            prepared = self._analysis.prepare(checks, subject, workload, self._interrupt)
        except AnalysisUnavailable as error:
            # A suspension or a newer revision cut a query short: say that, not the query.
            if (ended := self._ended(action, desired, "nothing was changed")) is not None:
                return ended
            message = f"{error}; nothing was changed"
            self._journal.record(JournalAction.ANALYSIS, Phase.FAILED, pass_id=pass_id,
                                 revision=revision, key=action.key,
                                 detail={"outcome": "unavailable", "message": message})
            if error.fatal:  # the commit must change: not retried in a loop
                self._journal.failed(action.key, digest, revision, Reason.ANALYSIS_UNAVAILABLE,
                                     message)
                return ActionResult(action, Result.BLOCKED, message)
            status = Condition.RECONCILING if error.transient else Condition.STALLED
            self._journal.condition(action.key, status, Reason.ANALYSIS_UNAVAILABLE, message)
            return ActionResult(action, Result.FAILED, message, transient=error.transient)
        if action.finishes:
            for detail in self._journal.intents(change, action.key):
                if detail.get("to") == digest:
                    before = detail.get("baselines")
                    if isinstance(before, dict):
                        prepared.baselines.update({  # +Inf is kept as a string
                            name: None if value is None else float(value)
                            for name, value in before.items() if name in prepared.baselines})
                    break
        return prepared

    def _check_and_analyse(self, action: Action, place: Place, restart: Restart | None,
                           health: Health | None, pass_id: int, revision: str,
                           digest: str | None, prepared: Prepared) -> Checked:
        """The health check on a thread of its own, the analysis on this one, sharing one
        halt event: a failing health check ends the analysis, a failing analysis ends the
        soak, and the executor's stop event ends both (within ~0.2 s)."""
        soak = health.soak_seconds if health is not None else 0.0
        halt = Halt(self._interrupt)
        intent = self._journal.intent(JournalAction.ANALYSIS, action.key, pass_id=pass_id,
                                      revision=revision, detail=prepared.plan_json(soak))
        outcome: list[CommandResult | BaseException] = []

        def check() -> None:
            try:
                result = self._check(action, place, restart, health, pass_id, revision,
                                     digest, False, halt)
            except BaseException as error:  # re-raised on the executor's thread
                outcome.append(error)
                halt.set()
                return
            outcome.append(result)
            if not result.ok:
                halt.set()

        checking = threading.Thread(target=check, name=f"health {action.kind}/{action.name}",
                                    daemon=True)
        checking.start()
        try:
            report = self._analysis.run(prepared, soak, halt, lambda progress: (
                self._hooks.progress(f"analysing {action.kind}/{action.name} on "
                                     f"{action.target}: {progress.check.name} "
                                     f"{progress.taken}/{progress.planned}")))
        except BaseException:
            halt.set()
            checking.join()
            raise
        if report.verdict is Verdict.FAIL:
            halt.set()  # roll back now: the rest of the soak cannot undo a failed check
        checking.join()
        ended = report.verdict is None \
            and self._interrupt.cause in (Cause.SUSPENDED, Cause.SUPERSEDED)
        self._journal.outcome(intent, Phase.DONE if report.verdict is Verdict.PASS
                              else Phase.INTERRUPTED if ended else Phase.FAILED,
                              {**report.to_json(), **({"why": self._interrupt.why}
                                                      if ended else {})})
        health_result = outcome[0]
        if isinstance(health_result, BaseException):
            raise health_result
        if report.verdict is Verdict.FAIL:
            return Checked(False, report.message, "", report)
        if not health_result.ok:
            return Checked(False, health_result.detail, health_result.output_tail, report)
        if report.verdict is None:
            return Checked(False, "stopped during the analysis", "", report)
        if report.verdict is Verdict.INCONCLUSIVE:
            return Checked(False, report.message, "", report)
        return Checked(True, f"{health_result.detail}; {report.message}", "", report)

    def _hold_inconclusive(self, action: Action, check: CommandResult, revision: str,
                           in_place: str) -> ActionResult | None:
        """An inconclusive analysis holds: the change stays in place, is not promoted (not
        healthy, not canonical: nothing downstream moves) and is not rolled back; the
        revision is marked so it is not re-analysed in a loop. A new commit analyses again;
        a revert puts the previous content back."""
        if not isinstance(check, Checked) or check.analysis is None \
                or check.analysis.verdict is not Verdict.INCONCLUSIVE:
            return None
        message = (f"{check.detail}; held: {in_place}, not promoted and not rolled back; a "
                   "new commit runs the analysis again, a revert puts the previous content "
                   "back")
        self._journal.failed(action.key, action.desired, revision,
                             Reason.ANALYSIS_INCONCLUSIVE, message)
        self._analysis_event(EventType.STALLED, action, revision, action.desired,
                             Reason.ANALYSIS_INCONCLUSIVE, message, check.analysis)
        return ActionResult(action, Result.BLOCKED, message)

    def _analysis_event(self, kind: EventType, action: Action, revision: str, digest: str,
                        reason: Reason, message: str, report: AnalysisReport) -> None:
        self._hooks.event(Event(kind, action.target, revision, action.kind, action.name,
                                digest, reason, message, report.values()))

    # Models.

    def _flip(self, action: Action, model: Model, place: Place, desired: Desired,
              pass_id: int) -> ActionResult:
        digest, revision = action.desired, desired.revision
        try:
            artifact = self._verify_into_store(model, desired)
        except ArtifactUnavailable as error:
            if (ended := self._ended(action, desired, "the download was ended; nothing "
                                     "was changed")) is not None:
                return ended
            # Transient (network, a broken-off download): no mark, the next pass retries.
            self._journal.condition(action.key, Condition.RECONCILING, error.reason, str(error))
            return ActionResult(action, Result.FAILED, str(error))
        except (VerificationFailed, ArtifactMissing) as error:
            reason = Reason.DIGEST_MISMATCH if isinstance(error, VerificationFailed) \
                else error.reason
            message = f"artifact {redact(model.artifact.uri)} was not verified: {error}"
            self._journal.record(JournalAction.VERIFY, Phase.FAILED, pass_id=pass_id,
                                 revision=revision, key=action.key, detail={"error": message})
            self._emit(EventType.STALLED, action, revision, reason=reason, message=message)
            self._journal.failed(action.key, digest, revision, reason, message)
            return ActionResult(action, Result.FAILED, message)
        known_good = digest in self._journal.canonical_digests(model.name)
        gate: dict[str, Any] = {"gateSkipped": known_good}
        if model.gauntlet is not None and not known_good:
            self._restore_previous(model, desired, digest)
            verdict = self._gauntlets.evaluate(model, desired, digest, artifact)
            self._journal.record(JournalAction.GATE, Phase.DONE if verdict.passed
                                 else Phase.FAILED, pass_id=pass_id, revision=revision,
                                 key=action.key,
                                 detail={"digest": digest, "reason": verdict.reason,
                                         "remembered": verdict.remembered,
                                         "summary": verdict.message})
            outcome = verdict.outcome
            gate = _gate_values(verdict.reason, verdict.remembered, verdict.evidence)
            if outcome in ("stopped", "error", "blocked"):
                return self._no_verdict(action, model, digest, verdict.message, outcome,
                                        desired)
            if outcome == "inconclusive" and self._inconclusive == "hold":
                message = (f"gate {model.gauntlet} is inconclusive for sha256:{digest[:12]}: "
                           f"{verdict.message}; held (never a pass): a new commit with a "
                           "larger game budget, or 'reconciler gauntlet --retry', runs it again")
                self._emit_if_new(EventType.REJECTED, action, Condition.STALLED,
                                  Reason.GATE_INCONCLUSIVE, message, revision, gate)
                self._journal.condition(action.key, Condition.STALLED,
                                        Reason.GATE_INCONCLUSIVE, message)
                return ActionResult(action, Result.BLOCKED, message)
            if not verdict.passed:
                message = f"gate {model.gauntlet} rejected sha256:{digest[:12]}: " \
                          f"{verdict.message}"
                self._emit_if_new(EventType.REJECTED, action, Condition.STALLED,
                                  verdict.reason, message, revision, gate)
                self._journal.condition(action.key, Condition.STALLED, verdict.reason, message)
                return ActionResult(action, Result.BLOCKED, message)
        if self._interrupt.is_set():  # a gate takes minutes: a stop, a suspension since then
            return self._ended(action, desired, "nothing was flipped") \
                or self._interrupted(action, "stopped before the flip")
        if action.drift:
            self._hooks.drift(action.kind)
        previous, previous_digest = self._pointer_replaced(action, model, place, desired)
        prepared = self._prepare_analysis(action, model.analysis, model.restart, place,
                                          pass_id, desired, digest, JournalAction.FLIP)
        if isinstance(prepared, ActionResult):
            return prepared  # nothing was changed
        intent = self._journal.intent(JournalAction.FLIP, action.key, pass_id=pass_id,
                                      revision=revision,
                                      detail={"path": address_of(model, place.target),
                                              "from": previous, "fromDigest": previous_digest,
                                              "to": digest, "gateSkipped": known_good,
                                              "drift": action.drift, **_baselines(prepared)})
        self._journal.attempted(action.key, digest, revision)
        try:
            self._store.require(digest)  # proven again right before it is pointed at
            place.flip(model, digest, revision)
        except Exception as error:
            self._journal.outcome(intent, Phase.FAILED, {"error": str(error)})
            raise
        self._journal.outcome(intent, Phase.DONE)
        if action.restart_deferred:
            self._journal.canonical(model.name, digest)
            return self._owe_restart(action, revision, f"pointer put back to sha256:{digest[:12]}")
        self._emit(EventType.PROGRESSING, action, revision,
                   message=f"pointer flipped to sha256:{digest[:12]}; restarting and checking",
                   values=gate)
        check = self._restart_and_check(action, place, model.restart, model.health, pass_id,
                                        revision, digest, analysis=prepared)
        held = self._hold_inconclusive(action, check, revision, "the pointer keeps naming "
                                       f"sha256:{digest[:12]}, which is not recorded canonical")
        if held is not None:
            return held
        if check.ok:
            self._journal.canonical(model.name, digest)
            self._journal.applied(action.key, digest, revision, self._clock())
            self._emit(EventType.DRIFT_HEALED if action.drift else EventType.PROMOTED, action,
                       revision, reason=Reason.CONVERGED, values=gate,
                       message=f"{address_of(model, place.target)} -> sha256:{digest[:12]}: "
                               f"{check.detail}")
            self._collect(model, desired, pass_id)
            return ActionResult(action, Result.APPLIED,
                                f"{address_of(model, place.target)} -> sha256:{digest}")
        if (ended := self._ended(action, desired, f"{action.location} is left naming "
                                 f"sha256:{digest[:12]}, unverified: not flipped back, not "
                                 "marked failed")) is not None:
            return ended
        back, back_digest = self._pointer_back(action, previous, previous_digest)
        undo = self._journal.intent(JournalAction.ROLLBACK, action.key, pass_id=pass_id,
                                    revision=revision,
                                    detail={"path": address_of(model, place.target),
                                            "to": back, "toDigest": back_digest,
                                            "reason": check.detail})
        place.point_back(model, back, revision)
        after = self._restart_and_check(action, place, model.restart, model.health, pass_id,
                                        revision, back_digest, undoing=True)
        self._journal.outcome(undo, Phase.DONE if after.ok else Phase.FAILED,
                              {"detail": after.detail})
        return self._undone(action, revision, check, after, "pointer flipped back", digest)

    def _pointer_replaced(self, action: Action, model: Model, place: Place,
                          desired: Desired) -> tuple[str | None, str | None]:
        """What the pointer held before this flip (in the form ``point_back`` takes) and
        the digest that names. When the pointer already names the new digest (an attempt
        stopped between its flip and its check), that is the journal's ``from`` of the
        flip that moved it, never the live pointer."""
        if action.current != action.desired:
            previous = place.pointer_before(model, desired)
            named = self._store.named(previous) if previous is not None else None
            return previous, named or action.current
        for detail in self._journal.intents(JournalAction.FLIP, action.key):
            origin = _flip_origin(detail, self._store)
            if detail.get("to") == action.desired and origin[1] != action.desired:
                return origin
        return None, None

    def _pointer_back(self, action: Action, previous: str | None,
                      previous_digest: str | None) -> tuple[str | None, str | None]:
        """Where a failed flip points back to: the last healthy digest when the journal
        knows how the pointer named it and the store still proves its bytes, else what the
        flip replaced. Never the digest being undone."""
        known = self._journal.object(action.key)
        healthy = known["healthy_digest"] if known else None
        if healthy and healthy not in (action.desired, previous_digest):
            for detail in self._journal.intents(JournalAction.FLIP, action.key):
                link, named = _flip_origin(detail, self._store)
                if named is not None and named == healthy and link is not None \
                        and self._provable(link, named):
                    return link, named
        if previous is not None and previous_digest is not None \
                and self._store.named(previous) is not None:
            self._store.require(previous_digest)  # a rollback skips the gate, not the digest
        return previous, previous_digest

    def _provable(self, link: str, digest: str) -> bool:
        """A pointer form naming a store object is usable only while its bytes prove."""
        return self._store.named(link) is None or self._store.verified(digest) is not None

    def _restore_previous(self, model: Model, desired: Desired, digest: str) -> None:
        """The ``previous`` opponent must be played from proven bytes: one the store lost
        or quarantined is fetched again from where it came from, when that is known (the
        gate errors otherwise, rather than skip the opponent)."""
        prior = self._gauntlets.previous(model, digest)
        source = None if prior is None else self._journal.artifact_source(prior)
        if prior is None or source is None or self._store.verified(prior) is not None:
            return
        with contextlib.suppress(ReconcilerError, VerificationFailed, OSError):
            fetch(source[0], prior, source[1], self._store, desired.read_file,
                  limits=FetchLimits.of(self._artifacts), stop=self._interrupt)

    def _no_verdict(self, action: Action, model: Model, digest: str, why: str,
                    outcome: str, desired: Desired) -> ActionResult:
        """The gate gave no verdict on the model: a stop, an error of the tool (retried with
        backoff, never remembered), or the GPU budget (blocked until it frees up)."""
        if outcome == "stopped":
            return self._ended(action, desired, "the gate was ended without a verdict "
                               "(none is remembered)") or self._interrupted(action, why)
        if outcome == "blocked":
            self._emit_if_new(EventType.BUDGET_EXHAUSTED, action, Condition.STALLED,
                              Reason.BUDGET_EXHAUSTED, why, desired.revision)
            self._journal.condition(action.key, Condition.STALLED, Reason.BUDGET_EXHAUSTED, why)
            return ActionResult(action, Result.BLOCKED, why)
        message = f"gate {model.gauntlet} could not judge sha256:{digest[:12]}: {why}"
        self._journal.condition(action.key, Condition.RECONCILING, Reason.GATE_ERROR, message)
        return ActionResult(action, Result.FAILED, message, transient=True)

    def _emit(self, type: EventType, action: Action, revision: str | None, *,
              reason: str | None = None, message: str = "",
              values: dict[str, Any] | None = None) -> None:
        self._hooks.event(Event(type, action.target, revision, action.kind, action.name,
                                action.desired, reason, message, values or {}))

    def _emit_if_new(self, type: EventType, action: Action, status: str, reason: str | None,
                     message: str, revision: str, values: dict[str, Any] | None = None) -> None:
        """For conditions that stay while nothing changes (a stall, a rejection, a spent
        budget): tell the listeners once, when the journal's condition becomes this one,
        not on every pass that finds it still so. A message's head (before its first
        ': ') names what it is about (the digest a gate judged), its tail may vary. A stall
        is news only to an object that was not stalled (its reason changes from what failed
        to FailedBefore on the next pass)."""
        known = self._journal.object(action.key)
        head = message.split(": ")[0]
        was = None if known is None else (known["status"], known["reason"],
                                          str(known["message"] or "").split(": ")[0])
        if was is None or (was[0] != status if type is EventType.STALLED
                           else was != (status, reason, head)):
            self._emit(type, action, revision, reason=reason, message=message, values=values)

    def _ended(self, action: Action, desired: Desired, what: str) -> ActionResult | None:
        """A suspension or a newer revision ended the action: what is in place stays as it
        is (never undone: undoing is a change too, and a newer revision replaces it at
        once); no failure mark, no verdict. None when nothing of the kind happened."""
        cause = self._interrupt.cause
        if cause not in (Cause.SUSPENDED, Cause.SUPERSEDED):
            return None
        message = f"{self._interrupt.why}; {what}"
        suspended = cause is Cause.SUSPENDED
        self._journal.condition(action.key, Condition.RECONCILING,
                                Reason.SUSPENDED if suspended else Reason.SUPERSEDED, message)
        if not suspended:
            revision = desired.revision
            self._journal.record(JournalAction.SUPERSEDED, Phase.INFO, revision=revision,
                                 key=action.key, detail={"digest": action.desired,
                                                         "why": self._interrupt.why,
                                                         "left": what})
            self._hooks.event(Event(EventType.SUPERSEDED, action.target, revision,
                                    action.kind, action.name, action.desired,
                                    Reason.SUPERSEDED, message))
        return ActionResult(action, Result.WAITING if suspended else Result.SKIPPED, message)

    def _interrupted(self, action: Action, why: str) -> ActionResult:
        self._journal.condition(action.key, Condition.RECONCILING, Reason.INTERRUPTED, why)
        return ActionResult(action, Result.SKIPPED, f"interrupted by a stop request: {why}")

    def _collect(self, model: Model, desired: Desired, pass_id: int) -> None:
        """Keep the model's last ``keep`` canonical digests for rollback, and whatever any
        model declares or any pointer names on any of its targets (a downstream target may
        be soaking on an older digest; two models may share one)."""
        history = self._journal.canonical_digests(model.name)
        keep = set(history[:model.keep]) | {m.artifact.sha256 for m in desired.models.values()}
        for other in desired.models.values():
            for name in other.targets:
                target = desired.targets.get(name)
                if target is not None:
                    digest = self.place(target).pointed(other)
                    if digest is not None:
                        keep.add(digest)
        for digest in history:
            if digest not in keep and self._store.location(digest).exists():
                self._store.remove(digest)
                self._journal.record(JournalAction.COLLECT, Phase.DONE, pass_id=pass_id,
                                     key=("-", "Model", model.name),
                                     detail={"removed": digest, "keep": model.keep})

    def _verify_into_store(self, model: Model, desired: Desired) -> Path:
        """The artifact, proven to have the declared digest, in the store."""
        artifact = model.artifact
        self._journal.remember_artifact(artifact.sha256, artifact.uri, artifact.format)
        bytes_hook = self._hooks.fetching

        def progress(done: int, total: int) -> None:
            if bytes_hook is not None:
                bytes_hook(model.name, done, total)
            else:
                self._hooks.progress(f"fetching {model.name}: {done >> 20} of {total >> 20} "
                                     "MiB" if total else f"fetching {model.name}: "
                                     f"{done >> 20} MiB")

        return fetch(artifact.uri, artifact.sha256, artifact.format, self._store,
                     desired.read_file, stop=self._interrupt,
                     limits=FetchLimits.of(self._artifacts, artifact.max_bytes),
                     progress=progress)


def _gate_values(reason: str, remembered: bool, evidence: dict[str, Any]) -> dict[str, Any]:
    """The gate's measured values for listeners: its scalars only, a bounded set."""
    values: dict[str, Any] = {"gate": reason, "remembered": remembered}
    for name, value in list(evidence.items())[:32]:
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) < 200):
            values[name] = value
    return values


def _baselines(prepared: Prepared | None) -> dict[str, object]:
    """The ``before`` baselines, kept in the change's intent (see ``_prepare_analysis``)."""
    return {"baselines": prepared.baselines_json()} if prepared is not None else {}


def _digest_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _flip_origin(detail: dict[str, object], store: ContentStore) -> tuple[str | None, str | None]:
    """A flip intent's ``from`` and the digest it names (journals written before
    ``fromDigest`` was recorded: read from the store link)."""
    link = _digest_or_none(detail.get("from"))
    named = _digest_or_none(detail.get("fromDigest"))
    if named is None and link is not None:
        named = store.named(link)
    return link, named
