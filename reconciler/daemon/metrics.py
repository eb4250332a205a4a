"""Prometheus metrics: base units, ``_total`` counters, bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from reconciler.sandbox.runner import MODES as SANDBOX_MODES
from reconciler.vocabulary import OBJECT_KINDS, PENDING_REASONS, PassResult

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
                                          "The revision of the last pass that converged.",
                                          registry=self.registry)
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

    def set_sandbox(self, mode: str) -> None:
        for known in SANDBOX_MODES:
            self.sandbox.labels(known).set(1 if known == mode else 0)

    def set_pending(self, counts: dict[str, int]) -> None:
        """Reasons outside the bounded list are not exported (no new series from input)."""
        for reason in PENDING_REASONS:
            self.pending_actions.labels(reason).set(counts.get(reason, 0))
