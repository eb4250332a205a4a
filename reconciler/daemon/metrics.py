"""Prometheus metrics: base units, ``_total`` counters, bounded labels.

Label values come from bounded lists (vocabulary.py) or from the desired state (a target,
kind and name per declared object); nothing a client or a remote sends makes a series.
An object removed from the desired state takes its series with it.
"""

from __future__ import annotations

import platform
import time
from collections import Counter as Tally
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from reconciler import __version__
from reconciler.notify import KINDS as NOTIFICATION_KINDS
from reconciler.notify import RESULTS as NOTIFICATION_RESULTS
from reconciler.passes import PassOutcome
from reconciler.sandbox.runner import MODES as SANDBOX_MODES
from reconciler.vocabulary import (
    OBJECT_KINDS,
    PENDING_REASONS,
    ActionResult,
    Condition,
    Op,
    PassResult,
)

ObjectKey = tuple[str, str, str]  # target, kind, name

OPPONENTS = ("random", "heuristic", "previous")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_duration = Histogram(
            "reconciler_reconcile_duration_seconds", "Time one reconcile pass took.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry)
        self.reconcile = Counter("reconciler_reconcile", "Reconcile passes by result.",
                                 ["result"], registry=self.registry)
        self.drift_corrections = Counter("reconciler_drift_corrections",
                                         "Hand edits on the fleet put back.", ["kind"],
                                         registry=self.registry)
        self.rollbacks = Counter("reconciler_rollbacks", "Changes undone after a failed "
                                 "restart or health check.", ["kind"], registry=self.registry)
        self.last_applied_revision = Info("reconciler_last_applied_revision",
                                          "The revision the last pass applied or found in "
                                          "sync (one series: each pass replaces it).",
                                          registry=self.registry)
        self.object_condition = Gauge(
            "reconciler_object_condition", "1 for the condition each declared object is in "
            "(Ready, Reconciling, Stalled), 0 for the others (Flux's gotk_reconcile_condition).",
            ["target", "kind", "name", "condition"], registry=self.registry)
        self.build_info = Gauge("reconciler_build_info", "Always 1: the running version.",
                                ["version", "python"], registry=self.registry)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.loop_healthy = Gauge("reconciler_loop_healthy", "1 while the pass loop shows "
                                  "signs of life (what /healthz and the systemd watchdog "
                                  "hear), 0 once it is stuck.", registry=self.registry)
        self.last_success = Gauge("reconciler_last_success_timestamp_seconds",
                                  "When a pass last ended without failure.",
                                  registry=self.registry)
        self.last_applied = Gauge("reconciler_last_applied_timestamp_seconds",
                                  "When a change was last applied to the fleet.",
                                  registry=self.registry)
        self.pending_actions = Gauge("reconciler_pending_actions",
                                     "Changes that cannot run yet, by reason.", ["reason"],
                                     registry=self.registry)
        self.gauntlet_games = Counter("reconciler_gauntlet_games", "Gauntlet games played, "
                                      "by opponent.", ["opponent"], registry=self.registry)
        self.quarantined = Counter("reconciler_store_quarantined_objects",
                                   "Store objects whose bytes did not match their digest, "
                                   "moved aside and never served.", registry=self.registry)
        self.sandbox = Gauge("reconciler_sandbox_mode", "Where repository code runs: 1 for the "
                             "mode in force (bwrap, none: the explicit opt-out).", ["mode"],
                             registry=self.registry)
        self.notifications = Counter("reconciler_notifications", "Notification deliveries "
                                     "by receiver kind and result (dropped: a full queue's "
                                     "oldest).", ["receiver_kind", "result"],
                                     registry=self.registry)
        for kind in NOTIFICATION_KINDS:
            for outcome in NOTIFICATION_RESULTS:
                self.notifications.labels(kind, outcome)
        self.suspended_targets = Gauge("reconciler_suspended_targets",
                                       "Declared targets on which nothing is changed "
                                       "(reconciler suspend).", registry=self.registry)
        self.fleet_suspended = Gauge("reconciler_fleet_suspended", "1 while the whole fleet "
                                     "is suspended (reconciler suspend --all).",
                                     registry=self.registry)
        for opponent in OPPONENTS:
            self.gauntlet_games.labels(opponent)
        for result in PassResult:
            self.reconcile.labels(result)
        for kind in OBJECT_KINDS:
            self.drift_corrections.labels(kind)
            self.rollbacks.labels(kind)
        for reason in PENDING_REASONS:
            self.pending_actions.labels(reason).set(0)
        self._objects: set[ObjectKey] = set()

    def follow_liveness(self, alive: Callable[[], bool]) -> None:
        self.loop_healthy.set_function(lambda: 1.0 if alive() else 0.0)

    def set_sandbox(self, mode: str) -> None:
        for known in SANDBOX_MODES:
            self.sandbox.labels(known).set(1 if known == mode else 0)

    def set_pending(self, counts: dict[str, int]) -> None:
        """Reasons outside the bounded list are not exported (no new series from input)."""
        for reason in PENDING_REASONS:
            self.pending_actions.labels(reason).set(counts.get(reason, 0))

    def set_conditions(self, conditions: Mapping[ObjectKey, str], *, looked_at: Collection[str],
                       declared: Collection[str]) -> None:
        """``conditions``: the objects a pass looked at. An object known before and not
        among them has left the desired state if the pass looked at its target (or its
        target is no longer declared): its series go. A target the pass could not look at
        (unreachable, a stopped pass) keeps what it last showed."""
        for key, condition in conditions.items():
            for known in Condition:
                self.object_condition.labels(*key, known).set(1 if known == condition else 0)
        for key in self._objects - conditions.keys():
            if key[0] in looked_at or key[0] not in declared:
                for known in Condition:
                    self.object_condition.remove(*key, known)
                self._objects.discard(key)
        self._objects |= conditions.keys()

    def observe_pass(self, outcome: PassOutcome, seconds: float,
                     objects: Iterable[Mapping[str, Any]] | None) -> None:
        """After each pass: its result, how long it took, the revision it worked on and,
        from the journal's rows (``Journal.objects``; None when it could not be read),
        each declared object's condition."""
        self.reconcile_duration.observe(seconds)
        self.reconcile.labels(outcome.result).inc()
        now = time.time()
        if outcome.result in (PassResult.CONVERGED, PassResult.CHANGED, PassResult.WAITING):
            self.last_success.set(now)
        if outcome.revision is not None:
            self.last_applied_revision.info({"revision": outcome.revision})
        report = outcome.report
        if report is not None and report.count(ActionResult.APPLIED):
            self.last_applied.set(now)
        if report is None or objects is None:  # no plan ran (invalid, unreachable), or
            return  # the journal is unreadable: the series show what they last knew
        present = {r.action.key for r in report.results
                   if not (r.action.op is Op.DELETE and r.result is ActionResult.APPLIED)}
        rows = {(row["target"], row["kind"], row["name"]): row for row in objects}
        conditions = {key: str((rows.get(key) or {}).get("status") or Condition.RECONCILING)
                      for key in present}
        complete = not (report.stopped or report.replan)
        self.set_conditions(conditions,
                            looked_at={r.action.target for r in report.results}
                            if complete else (),
                            declared={target.name for target in outcome.targets})
        # Why changes wait, from the same rows: a gate that rejected during this very pass
        # counts at once (the planner names the reason only from the next pass on).
        pending = Tally(str(rows[key]["reason"]) for key, condition in conditions.items()
                        if key in rows and condition != Condition.READY)
        for result in report.results:
            if (result.result in (ActionResult.WAITING, ActionResult.BLOCKED)
                    and result.action.key not in rows and result.action.reason):
                pending[str(result.action.reason)] += 1
        self.set_pending(dict(pending))
