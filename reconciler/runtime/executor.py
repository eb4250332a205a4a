"""Runs a plan's ready actions on local targets: gates, change, restart, health, undo.

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
from typing import Literal

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
from reconciler.fleet.commands import CommandResult, check_health, command_environment, run_command
from reconciler.fleet.local import LocalFleet
from reconciler.gauntlet.runner import GauntletRunner
from reconciler.plan.planner import Action
from reconciler.runtime.journal import Journal

Result = Literal["applied", "in-sync", "rolled-back", "failed", "blocked", "waiting", "skipped"]


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    result: Result
    message: str


@dataclass(frozen=True)
class PassReport:
    revision: str
    results: tuple[ActionResult, ...]
    stopped: bool

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
                 hooks: Hooks | None = None, clock: Callable[[], float] = time.time) -> None:
        self._fleet = fleet
        self._journal = journal
        self._stop = stop
        self._hooks = hooks or Hooks()
        self._clock = clock
        self._gauntlets = GauntletRunner(journal, fleet.store, progress=self._hooks.progress,
                                         games=self._hooks.gauntlet_games)

    def execute(self, planned: PlannedPass, pass_id: int) -> PassReport:
        desired = planned.desired
        results: list[ActionResult] = []
        for action in planned.plan.actions:
            if self._stop.is_set():
                return PassReport(desired.revision, tuple(results), stopped=True)
            results.append(self._one(action, desired, pass_id))
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
        if not target.is_local:
            return ActionResult(action, "skipped", "Kubernetes targets are not supported yet")
        budget = next(iter(desired.budgets.values()), None)
        refusal = self._budget_refusal(action, budget)
        if refusal is not None:
            self._journal.condition(action.key, "Stalled", "BudgetExhausted", refusal)
            return ActionResult(action, "blocked", refusal)
        self._hooks.progress(f"{action.op} {action.kind}/{action.name} on {action.target}")
        try:
            if action.kind == "Model":
                return self._flip(action, desired.models[action.name], target, desired, pass_id)
            obj: Delivered = (desired.strategies[action.name] if action.kind == "Strategy"
                              else desired.configs[action.name])
            return self._deliver(action, obj, target, desired, pass_id)
        except OSError as error:
            # The fleet's file system refused (not writable, full, a file where a folder
            # should be): this action fails, the pass and the daemon go on.
            message = f"{action.location} under {self._fleet.root_of(target)}: {error}"
            self._journal.record("error", "failed", pass_id=pass_id, revision=desired.revision,
                                 key=action.key, detail={"error": message})
            self._journal.condition(action.key, "Stalled", "IOError", message)
            return ActionResult(action, "failed", message)

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

    def _deliver(self, action: Action, obj: Delivered, target: Target, desired: Desired,
                 pass_id: int) -> ActionResult:
        assert obj.deliver.path is not None
        path = obj.deliver.path
        content = desired.read_content(obj)
        revision = desired.revision
        if action.drift:
            self._hooks.drift(action.kind)
        intent = self._journal.intent("deliver", action.key, pass_id=pass_id, revision=revision,
                                      detail={"path": path, "from": action.current,
                                              "to": action.desired, "drift": action.drift})
        self._journal.attempted(action.key, action.desired, revision)
        try:
            self._fleet.preserve(target, path)
            self._fleet.store_put(content)
            self._fleet.write(target, path, content, obj.deliver.mode)
        except OSError as error:
            # The host, not the commit, is at fault: no failure mark, the next pass retries
            # once the operator has fixed it.
            message = f"cannot write {path} under {self._fleet.root_of(target)}: {error}"
            self._journal.outcome(intent, "failed", {"error": message})
            self._journal.condition(action.key, "Stalled", "WriteFailed", message)
            return ActionResult(action, "failed", message)
        self._journal.outcome(intent, "done")
        check = self._restart_and_check(action, target, obj.restart, obj.health, pass_id,
                                        revision)
        if check.ok:
            self._journal.applied(action.key, action.desired, revision, self._clock())
            return ActionResult(action, "applied", f"delivered {path}")
        if isinstance(obj, Strategy) and obj.on_failure == "hold":
            self._journal.failed(action.key, action.desired, revision, "HealthCheckFailed",
                                 f"{check.detail}; held as configured (onFailure: hold)")
            return ActionResult(action, "failed", check.detail)
        back_to = self._last_healthy(action)
        undo = self._journal.intent("rollback", action.key, pass_id=pass_id, revision=revision,
                                    detail={"path": path, "to": back_to,
                                            "reason": check.detail})
        if back_to is None:
            self._fleet.remove(target, path)
        else:
            self._fleet.write(target, path, self._fleet.store_read(back_to), None)
        after = self._restart_and_check(action, target, obj.restart, obj.health, pass_id,
                                        revision, undoing=True)
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

    def _restart_and_check(self, action: Action, target: Target, restart: Restart | None,
                           health: Health | None, pass_id: int, revision: str, *,
                           undoing: bool = False) -> CommandResult:
        root = self._fleet.root_of(target)
        environment = command_environment({
            "RECONCILER_TARGET": target.name, "RECONCILER_TARGET_ROOT": str(root),
            "RECONCILER_REVISION": revision, "RECONCILER_OBJECT": f"{action.kind}/{action.name}"})
        root.mkdir(parents=True, exist_ok=True)
        if restart is not None and restart.command is not None:
            intent = self._journal.intent("restart", action.key, pass_id=pass_id,
                                          revision=revision,
                                          detail={"command": list(restart.command),
                                                  "undoing": undoing})
            result = run_command(restart.command, root, restart.timeout_seconds, environment)
            self._journal.outcome(intent, "done" if result.ok else "failed",
                                  {"detail": result.detail, "output": result.output_tail})
            if not result.ok:
                return CommandResult(False, f"restart failed: {result.detail}",
                                     result.output_tail)
        if health is None:
            return CommandResult(True, "no health check declared")
        intent = self._journal.intent("health", action.key, pass_id=pass_id, revision=revision,
                                      detail={"undoing": undoing})
        result = check_health(health, root, environment, self._stop)
        self._journal.outcome(intent, "done" if result.ok else "failed",
                              {"detail": result.detail})
        if not result.ok:
            return CommandResult(False, f"health check failed: {result.detail}",
                                 result.output_tail)
        return result

    # Models.

    def _flip(self, action: Action, model: Model, target: Target, desired: Desired,
              pass_id: int) -> ActionResult:
        assert model.pointer.path is not None
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
            if not verdict.passed:
                message = f"gate {model.gauntlet} rejected sha256:{digest[:12]}: " \
                          f"{verdict.message}"
                self._journal.condition(action.key, "Stalled", verdict.reason, message)
                return ActionResult(action, "blocked", message)
        previous = self._fleet.observe(target, [], [model.pointer.path]).pointers[
            model.pointer.path].link
        live = self._fleet.root_of(target) / model.pointer.path
        if previous is None and live.is_file():
            # A canonical model copied in by hand (cp, not ln -sf): keep it in the store so
            # the flip loses nothing and a rollback can put it back.
            previous = str(fetch(f"file://{live}", None, "file", self._fleet.store,
                                 desired.read_file))
        intent = self._journal.intent("flip", action.key, pass_id=pass_id, revision=revision,
                                      detail={"path": model.pointer.path, "from": previous,
                                              "to": digest, "gateSkipped": known_good})
        self._journal.attempted(action.key, digest, revision)
        self._fleet.flip(target, model.pointer.path, digest)
        self._journal.outcome(intent, "done")
        check = self._restart_and_check(action, target, model.restart, model.health, pass_id,
                                        revision)
        if check.ok:
            self._journal.canonical(model.name, digest)
            self._journal.applied(action.key, digest, revision, self._clock())
            self._collect(model, desired, pass_id)
            return ActionResult(action, "applied", f"{model.pointer.path} -> sha256:{digest}")
        undo = self._journal.intent("rollback", action.key, pass_id=pass_id, revision=revision,
                                    detail={"path": model.pointer.path, "to": previous,
                                            "reason": check.detail})
        self._fleet.point(target, model.pointer.path, previous)
        after = self._restart_and_check(action, target, model.restart, model.health, pass_id,
                                        revision, undoing=True)
        self._journal.outcome(undo, "done" if after.ok else "failed", {"detail": after.detail})
        return self._undone(action, revision, check, after, "pointer flipped back")

    def _collect(self, model: Model, desired: Desired, pass_id: int) -> None:
        """Keep the model's last ``keep`` canonical digests for rollback, and whatever any
        target still points at (a downstream target may be soaking on an older one)."""
        history = self._journal.canonical_digests(model.name)
        keep = set(history[:model.keep]) | {model.artifact.sha256}
        for name in model.targets:
            target = desired.targets.get(name)
            if target is not None and target.is_local and model.pointer.path is not None:
                seen = self._fleet.observe(target, [], [model.pointer.path])
                digest = seen.pointers[model.pointer.path].sha256
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
        fetch(artifact.uri, artifact.sha256, artifact.format, self._fleet.store,
              desired.read_file,
              progress=lambda done, total: self._hooks.progress(
                  f"fetching {model.name}: {done >> 20} of {total >> 20} MiB"
                  if total else f"fetching {model.name}: {done >> 20} MiB"))
