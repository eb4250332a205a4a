"""Runs a plan's ready actions: gates, change, restart, health, undo.

The steps are the same on every target; a place (runtime/places.py, kube/place.py) carries
them out on a local directory tree or on a Kubernetes namespace.

Every step is journaled before it happens and after. A restart or health check that fails
puts back the last healthy content (or the previous pointer) and restarts again; the
revision is marked failed and is not retried until a new commit. Budgets are checked
before an action starts, so an exhausted budget never leaves a change half-applied.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from reconciler.app import PlannedPass
from reconciler.artifacts.fetch import ArtifactMissing, ArtifactUnavailable, fetch
from reconciler.artifacts.verify import VerificationFailed
from reconciler.desired.documents import (
    Budget,
    Delivered,
    Desired,
    Health,
    Model,
    Restart,
    Strategy,
    Target,
)
from reconciler.errors import ReconcilerError, ReplanNeeded, TransientError
from reconciler.fleet.commands import CommandResult
from reconciler.fleet.local import LocalFleet
from reconciler.gauntlet.runner import STOPPED, GauntletRunner, JobLauncher
from reconciler.plan.planner import Action, address_of
from reconciler.runtime.journal import Journal
from reconciler.runtime.places import LocalPlace, Place

if TYPE_CHECKING:
    from reconciler.kube.fleet import KubernetesFleet

Result = Literal["applied", "in-sync", "rolled-back", "failed", "blocked", "waiting", "skipped",
                 "conflict"]


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    result: Result
    message: str
    transient: bool = False  # an API outage: worth a retry with backoff


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


class Executor:
    def __init__(self, fleet: LocalFleet, journal: Journal, stop: threading.Event, *,
                 hooks: Hooks | None = None, clock: Callable[[], float] = time.time,
                 kube: KubernetesFleet | None = None,
                 gauntlet_jobs: JobLauncher | None = None) -> None:
        self._fleet = fleet
        self._kube = kube
        self._journal = journal
        self._stop = stop
        self._hooks = hooks or Hooks()
        self._clock = clock
        self._gauntlets = GauntletRunner(journal, fleet.store, progress=self._hooks.progress,
                                         games=self._hooks.gauntlet_games, jobs=gauntlet_jobs,
                                         stop=stop)

    def place(self, target: Target) -> Place:
        if target.is_local:
            return LocalPlace(self._fleet, target)
        from reconciler.kube.place import KubePlace  # only with a Kubernetes target
        assert self._kube is not None
        return KubePlace(self._kube, self._fleet, target, self._clock)

    def execute(self, planned: PlannedPass, pass_id: int) -> PassReport:
        desired = planned.desired
        results: list[ActionResult] = []
        for action in planned.plan.actions:
            if self._stop.is_set():
                return PassReport(desired.revision, tuple(results), stopped=True)
            result = self._one(action, desired, pass_id)
            results.append(result)
            if result.result == "conflict":
                return PassReport(desired.revision, tuple(results), stopped=False, replan=True)
        return PassReport(desired.revision, tuple(results), stopped=False)

    def _one(self, action: Action, desired: Desired, pass_id: int) -> ActionResult:
        target = desired.targets[action.target]
        if action.op == "noop":
            self._journal.applied(action.key, action.desired, desired.revision, self._clock())
            return ActionResult(action, "in-sync", "in sync")
        if action.status != "ready":
            status = "Stalled" if action.status == "blocked" else "Reconciling"
            message = action.message or action.status
            if action.not_before is not None:
                message += time.strftime(" (until %Y-%m-%d %H:%M:%S %Z)",
                                         time.localtime(action.not_before))
            known = self._journal.object(action.key) if action.reason == "FailedBefore" else None
            if known and known["failed_reason"]:
                message += f" (it failed: {known['failed_reason']})"  # keep the why in view
            self._journal.condition(action.key, status, action.reason, message)
            return ActionResult(action, action.status, message)
        budget = next(iter(desired.budgets.values()), None)
        refusal = self._budget_refusal(action, budget)
        if refusal is not None:
            self._journal.condition(action.key, "Stalled", "BudgetExhausted", refusal)
            return ActionResult(action, "blocked", refusal)
        self._hooks.progress(f"{action.op} {action.kind}/{action.name} on {action.target}")
        place = self.place(target)
        try:
            if action.op == "delete":
                return self._prune(action, place, desired, pass_id)
            if action.kind == "Model":
                return self._flip(action, desired.models[action.name], place, desired, pass_id)
            obj: Delivered = (desired.strategies[action.name] if action.kind == "Strategy"
                              else desired.configs[action.name])
            return self._deliver(action, obj, place, desired, pass_id)
        except OSError as error:
            # The fleet's file system refused (not writable, full, a file where a folder
            # should be): this action fails, the pass and the daemon go on.
            message = f"{action.location} under {place.where}: {error}"
            self._journal.record("error", "failed", pass_id=pass_id, revision=desired.revision,
                                 key=action.key, detail={"error": message})
            self._journal.condition(action.key, "Stalled", "IOError", message)
            return ActionResult(action, "failed", message)
        except ReconcilerError as error:
            return self._api_fault(action, error, desired.revision, pass_id)

    def _api_fault(self, action: Action, error: ReconcilerError, revision: str,
                   pass_id: int) -> ActionResult:
        """A cluster refused or failed a step. No failure mark: the commit is not at fault.
        A pointer conflict stops the pass so that it is re-read and re-planned."""
        message = f"{action.location}: {error.reason}: {error}"
        self._journal.record("error", "failed", pass_id=pass_id, revision=revision,
                             key=action.key, detail={"error": message, "reason": error.reason})
        conflict = isinstance(error, ReplanNeeded)
        status = "Reconciling" if conflict or isinstance(error, TransientError) else "Stalled"
        self._journal.condition(action.key, status, error.reason, message)
        return ActionResult(action, "conflict" if conflict else "failed", message,
                            transient=isinstance(error, TransientError))

    def _prune(self, action: Action, place: Place, desired: Desired,
               pass_id: int) -> ActionResult:
        intent = self._journal.intent("prune", action.key, pass_id=pass_id,
                                      revision=desired.revision,
                                      detail={"location": action.location})
        place.remove(action.name, desired.revision)
        self._journal.outcome(intent, "done")
        self._journal.condition(action.key, "Ready", "Pruned", f"deleted {action.location}: "
                                "no longer declared")
        return ActionResult(action, "applied", f"pruned {action.location}")

    def _budget_refusal(self, action: Action, budget: Budget | None) -> str | None:
        if budget is None:
            return None
        now = self._clock()
        restarts = any(step.startswith("restart:") for step in action.steps)
        if restarts and budget.restarts_per_hour is not None:
            used = self._journal.count_since("restart", "done", now - 3600)
            if used >= budget.restarts_per_hour:
                return (f"restart budget exhausted: {used} of {budget.restarts_per_hour} "
                        "restarts in the last hour")
        if action.op == "flip" and budget.promotions_per_day is not None:
            used = self._journal.count_since("flip", "done", now - 86400)
            if used >= budget.promotions_per_day:
                return (f"promotion budget exhausted: {used} of {budget.promotions_per_day} "
                        "pointer flips in the last day")
        return None

    # Strategies and Configs.

    def _deliver(self, action: Action, obj: Delivered, place: Place, desired: Desired,
                 pass_id: int) -> ActionResult:
        address = address_of(obj, place.target)
        content = desired.read_content(obj)
        revision = desired.revision
        if action.drift:
            self._hooks.drift(action.kind)
        intent = self._journal.intent("deliver", action.key, pass_id=pass_id, revision=revision,
                                      detail={"path": address, "from": action.current,
                                              "to": action.desired, "drift": action.drift})
        self._journal.attempted(action.key, action.desired, revision)
        try:
            place.preserve(address)
            self._fleet.store_put(content)
            place.write(address, content, obj.deliver.mode, revision)
        except OSError as error:
            # The host, not the commit, is at fault: no failure mark, the next pass retries
            # once the operator has fixed it.
            message = f"cannot write {address} under {place.where}: {error}"
            self._journal.outcome(intent, "failed", {"error": message})
            self._journal.condition(action.key, "Stalled", "WriteFailed", message)
            return ActionResult(action, "failed", message)
        except ReconcilerError as error:
            self._journal.outcome(intent, "failed", {"error": str(error)})
            raise
        self._journal.outcome(intent, "done")
        check = self._restart_and_check(action, place, obj.restart, obj.health, pass_id,
                                        revision, action.desired)
        if check.ok:
            self._journal.applied(action.key, action.desired, revision, self._clock())
            return ActionResult(action, "applied", f"delivered {action.location}")
        if isinstance(obj, Strategy) and obj.on_failure == "hold":
            self._journal.failed(action.key, action.desired, revision, "HealthCheckFailed",
                                 f"{check.detail}; held as configured (onFailure: hold)")
            return ActionResult(action, "failed", check.detail)
        back_to = self._last_healthy(action)
        undo = self._journal.intent("rollback", action.key, pass_id=pass_id, revision=revision,
                                    detail={"path": address, "to": back_to,
                                            "reason": check.detail})
        if back_to is None:
            place.remove(address, revision)
        else:
            place.write(address, self._fleet.store_read(back_to), None, revision)
        after = self._restart_and_check(action, place, obj.restart, obj.health, pass_id,
                                        revision, back_to, undoing=True)
        self._journal.outcome(undo, "done" if after.ok else "failed", {"detail": after.detail})
        return self._undone(action, revision, check, after, f"rolled back to "
                            f"{'nothing (removed)' if back_to is None else back_to[:12]}")

    def _undone(self, action: Action, revision: str, check: CommandResult,
                after: CommandResult, how: str) -> ActionResult:
        """After an undo: a failure marks the revision; a stop request does not, so the
        change is simply tried again when the daemon comes back."""
        if not after.ok:
            how += f"; the previous state is back, but it is not healthy either: {after.detail}"
        if self._stop.is_set():
            self._journal.condition(action.key, "Reconciling", "Interrupted",
                                    f"stopped before the health check passed; {how}")
            return ActionResult(action, "skipped", f"interrupted by a stop request; {how}")
        self._journal.failed(action.key, action.desired, revision, "RolledBack",
                             f"{check.detail}; {how}")
        self._hooks.rollback(action.kind)
        return ActionResult(action, "rolled-back", f"{check.detail}; {how}")

    def _last_healthy(self, action: Action) -> str | None:
        """The content to return to: the last healthy digest, else what was there before."""
        known = self._journal.object(action.key)
        if known and known["healthy_digest"] and known["healthy_digest"] != action.desired \
                and self._fleet.store_has(known["healthy_digest"]):
            return str(known["healthy_digest"])
        return action.current

    def _restart_and_check(self, action: Action, place: Place, restart: Restart | None,
                           health: Health | None, pass_id: int, revision: str,
                           digest: str | None, *, undoing: bool = False) -> CommandResult:
        """Restart (a command, or the digest into a Deployment's pod template), then check
        (a health command or probe, or the rollout). ``digest`` is what is now in place."""
        if restart is not None:
            intent = self._journal.intent("restart", action.key, pass_id=pass_id,
                                          revision=revision,
                                          detail={**place.restart_detail(restart),
                                                  "undoing": undoing})
            try:
                result = place.restart(action.kind, action.name, restart, digest, revision)
            except ReconcilerError as error:  # the next pass finishes it (History.unfinished)
                self._journal.outcome(intent, "failed", {"error": str(error)})
                raise
            self._journal.outcome(intent, "done" if result.ok else "failed",
                                  {"detail": result.detail, "output": result.output_tail})
            if not result.ok:
                return CommandResult(False, f"restart failed: {result.detail}",
                                     result.output_tail)
        if not place.has_check(restart, health):
            return CommandResult(True, "no health check declared")
        intent = self._journal.intent("health", action.key, pass_id=pass_id, revision=revision,
                                      detail={"undoing": undoing})
        try:
            result = place.check(action.kind, action.name, restart, health, digest, revision,
                                 self._stop)
        except ReconcilerError as error:
            self._journal.outcome(intent, "failed", {"error": str(error)})
            raise
        self._journal.outcome(intent, "done" if result.ok else "failed",
                              {"detail": result.detail})
        if not result.ok:
            return CommandResult(False, f"health check failed: {result.detail}",
                                 result.output_tail)
        return result

    # Models.

    def _flip(self, action: Action, model: Model, place: Place, desired: Desired,
              pass_id: int) -> ActionResult:
        digest, revision = action.desired, desired.revision
        try:
            self._verify_into_store(model, desired)
        except ArtifactUnavailable as error:
            # Transient (network, a broken-off download): no mark, the next pass retries.
            self._journal.condition(action.key, "Reconciling", error.reason, str(error))
            return ActionResult(action, "failed", str(error))
        except (VerificationFailed, ArtifactMissing) as error:
            reason = "DigestMismatch" if isinstance(error, VerificationFailed) else error.reason
            message = f"artifact {model.artifact.uri} was not verified: {error}"
            self._journal.record("verify", "failed", pass_id=pass_id, revision=revision,
                                 key=action.key, detail={"error": message})
            self._journal.failed(action.key, digest, revision, reason, message)
            return ActionResult(action, "failed", message)
        known_good = digest in self._journal.canonical_digests(model.name)
        if model.gauntlet is not None and not known_good:
            verdict = self._gauntlets.evaluate(model, desired, digest,
                                               self._fleet.store_path(digest))
            self._journal.record("gate", "done" if verdict.passed else "failed",
                                 pass_id=pass_id, revision=revision, key=action.key,
                                 detail={"digest": digest, "reason": verdict.reason,
                                         "remembered": verdict.remembered,
                                         "summary": verdict.message})
            if verdict.reason == STOPPED:
                return self._interrupted(action, verdict.message)
            if not verdict.passed:
                message = f"gate {model.gauntlet} rejected sha256:{digest[:12]}: " \
                          f"{verdict.message}"
                self._journal.condition(action.key, "Stalled", verdict.reason, message)
                return ActionResult(action, "blocked", message)
        if self._stop.is_set():  # a gate takes minutes: a stop or a lost Lease since then
            return self._interrupted(action, "stopped before the flip")
        previous = place.pointer_before(model, desired)
        intent = self._journal.intent("flip", action.key, pass_id=pass_id, revision=revision,
                                      detail={"path": address_of(model, place.target),
                                              "from": previous, "to": digest,
                                              "gateSkipped": known_good})
        self._journal.attempted(action.key, digest, revision)
        try:
            place.flip(model, digest, revision)
        except ReconcilerError as error:
            self._journal.outcome(intent, "failed", {"error": str(error)})
            raise
        self._journal.outcome(intent, "done")
        check = self._restart_and_check(action, place, model.restart, model.health, pass_id,
                                        revision, digest)
        if check.ok:
            self._journal.canonical(model.name, digest)
            self._journal.applied(action.key, digest, revision, self._clock())
            self._collect(model, desired, pass_id)
            return ActionResult(action, "applied",
                                f"{address_of(model, place.target)} -> sha256:{digest}")
        undo = self._journal.intent("rollback", action.key, pass_id=pass_id, revision=revision,
                                    detail={"path": address_of(model, place.target),
                                            "to": previous, "reason": check.detail})
        place.point_back(model, previous, revision)
        after = self._restart_and_check(action, place, model.restart, model.health, pass_id,
                                        revision, action.current, undoing=True)
        self._journal.outcome(undo, "done" if after.ok else "failed", {"detail": after.detail})
        return self._undone(action, revision, check, after, "pointer flipped back")

    def _interrupted(self, action: Action, why: str) -> ActionResult:
        self._journal.condition(action.key, "Reconciling", "Interrupted", why)
        return ActionResult(action, "skipped", f"interrupted by a stop request: {why}")

    def _collect(self, model: Model, desired: Desired, pass_id: int) -> None:
        """Keep the model's last ``keep`` canonical digests for rollback, and whatever any
        target still points at (a downstream target may be soaking on an older one)."""
        history = self._journal.canonical_digests(model.name)
        keep = set(history[:model.keep]) | {model.artifact.sha256}
        for name in model.targets:
            target = desired.targets.get(name)
            if target is not None:
                digest = self.place(target).pointed(model)
                if digest is not None:
                    keep.add(digest)
        for digest in history:
            if digest not in keep and self._fleet.store_path(digest).exists():
                self._fleet.store_remove(digest)
                self._journal.record("collect", "done", pass_id=pass_id,
                                     key=("-", "Model", model.name),
                                     detail={"removed": digest, "keep": model.keep})

    def _verify_into_store(self, model: Model, desired: Desired) -> None:
        """The artifact, proven to have the declared digest, in the store."""
        artifact = model.artifact
        self._journal.remember_artifact(artifact.sha256, artifact.uri, artifact.format)
        fetch(artifact.uri, artifact.sha256, artifact.format, self._fleet.store,
              desired.read_file,
              progress=lambda done, total: self._hooks.progress(
                  f"fetching {model.name}: {done >> 20} of {total >> 20} MiB"
                  if total else f"fetching {model.name}: {done >> 20} MiB"))
