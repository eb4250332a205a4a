"""The words the daemon speaks: conditions, reasons, journal actions, step kinds, results.

Each is an enum so that a typo is a type error, not a status nobody can match, and so that
the metrics' label sets are derived from the same lists (bounded by construction). Values
are plain strings (``StrEnum``): they are what the journal, ``status --output json`` and
the plan JSON have always shown.
"""

from __future__ import annotations

from enum import StrEnum


class Condition(StrEnum):
    """Per-object status, in the Ready / Reconciling / Stalled style of Flux and kstatus."""

    READY = "Ready"
    RECONCILING = "Reconciling"  # work under way or waiting for a time; no person needed
    STALLED = "Stalled"  # needs a new commit or a person


class Reason(StrEnum):
    """Why an object is in its condition (PascalCase, for machines)."""

    # Ready
    CONVERGED = "Converged"
    PRUNED = "Pruned"
    # Waiting: the planner holds an action until a time or an event
    UPSTREAM_NOT_HEALTHY = "UpstreamNotHealthy"
    SOAKING = "Soaking"
    OUTSIDE_WINDOW = "OutsideWindow"
    RESTART_DEFERRED = "RestartDeferred"
    INTERRUPTED = "Interrupted"
    SUSPENDED = "Suspended"  # a person stopped the line on the target (reconciler suspend)
    SUPERSEDED = "Superseded"  # a newer revision ended the check of this one
    # Blocked: retrying the same revision cannot help
    FAILED_BEFORE = "FailedBefore"
    BUDGET_EXHAUSTED = "BudgetExhausted"
    ROLLED_BACK = "RolledBack"
    WAVE_FAILED = "WaveFailed"  # the revision failed on another target of its waves
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    # Analysis during the soak (docs/analysis.md)
    ANALYSIS_FAILED = "AnalysisFailed"  # a check failed: rolled back, revision marked
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"  # no data or errors: held, never promoted
    ANALYSIS_UNAVAILABLE = "AnalysisUnavailable"  # could not measure before the change
    # Gates and artifacts
    GATE_PASSED = "GatePassed"
    GATE_FAILED = "GateFailed"
    GATE_INCONCLUSIVE = "GateInconclusive"
    GATE_ERROR = "GateError"
    GAUNTLET_ERROR = "GauntletError"
    GAUNTLET_TIMEOUT = "GauntletTimeout"
    GAUNTLET_STOPPED = "GauntletStopped"
    DIGEST_MISMATCH = "DigestMismatch"
    ARTIFACT_MISSING = "ArtifactMissing"
    ARTIFACT_UNAVAILABLE = "ArtifactUnavailable"
    STORE_OBJECT_CORRUPT = "StoreObjectCorrupt"
    STORE_OBJECT_MISSING = "StoreObjectMissing"
    # Faults of the host, the cluster or the daemon itself
    WRITE_FAILED = "WriteFailed"
    IO_ERROR = "IOError"
    HOST_RESOURCES = "HostResourcesExhausted"
    JOURNAL_UNAVAILABLE = "JournalUnavailable"
    JOURNAL_CORRUPT = "JournalCorrupt"
    UNEXPECTED_ERROR = "UnexpectedError"
    TRANSIENT_FAILURE = "TransientFailure"
    STALLED = "Stalled"
    REPLAN_NEEDED = "ReplanNeeded"
    POINTER_CONFLICT = "PointerConflict"
    # The repository refused our credentials (or they cannot be read): a person must act
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    # Kubernetes: an object or field that another manager owns (never taken over)
    NOT_OWNED = "NotOwned"
    FIELD_CONFLICT = "FieldConflict"


# What the ``reconciler_pending_actions`` gauge counts: the reasons an action can wait or be
# blocked with. Derived here so that a new reason cannot be forgotten by the metrics.
PENDING_REASONS: tuple[Reason, ...] = (
    Reason.UPSTREAM_NOT_HEALTHY, Reason.SOAKING, Reason.OUTSIDE_WINDOW,
    Reason.RESTART_DEFERRED, Reason.SUSPENDED, Reason.FAILED_BEFORE, Reason.WAVE_FAILED,
    Reason.BUDGET_EXHAUSTED,
    Reason.GATE_FAILED, Reason.GATE_INCONCLUSIVE, Reason.GATE_ERROR, Reason.GAUNTLET_ERROR,
    Reason.GAUNTLET_TIMEOUT, Reason.ANALYSIS_FAILED, Reason.ANALYSIS_INCONCLUSIVE,
    Reason.ANALYSIS_UNAVAILABLE)


class JournalAction(StrEnum):
    """What a journal event is about."""

    DELIVER = "deliver"
    FLIP = "flip"
    RESTART = "restart"
    HEALTH = "health"
    ANALYSIS = "analysis"
    ROLLBACK = "rollback"
    RECALL = "recall"  # a revision that failed in a later wave taken back from this target
    PRUNE = "prune"
    VERIFY = "verify"
    GATE = "gate"
    GAUNTLET = "gauntlet"
    COLLECT = "collect"
    QUARANTINE = "quarantine"
    ERROR = "error"
    RECOVER = "recover"
    SUSPEND = "suspend"  # reconciler suspend: who, when, why
    RESUME = "resume"
    RECONCILE = "reconcile"  # reconciler reconcile: a pass asked for now
    SUPERSEDED = "superseded"  # a newer revision ended a check under way
    PROPOSE = "propose"  # a branch and pull request the reconciler proposed (promote, revert)


class Phase(StrEnum):
    """Where in its life a journal event is: intents are closed by one outcome."""

    INTENT = "intent"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    INFO = "info"


class StepKind(StrEnum):
    """The kinds of step an action is made of, in the order they run."""

    FINISH = "finish"
    VERIFY = "verify"
    GATE = "gate"
    GATE_SKIPPED = "gate-skipped"
    RESTART = "restart"
    HEALTH = "health"
    ANALYSIS = "analysis"
    PRUNE = "prune"
    RECALL = "recall"


class Op(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    FLIP = "flip"
    DELETE = "delete"
    RECALL = "recall"  # put back what a target had before a revision that failed in its waves
    NOOP = "noop"


class ActionStatus(StrEnum):
    READY = "ready"
    WAITING = "waiting"
    BLOCKED = "blocked"


class ActionResult(StrEnum):
    """How one action of a pass ended."""

    APPLIED = "applied"
    IN_SYNC = "in-sync"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"
    BLOCKED = "blocked"
    WAITING = "waiting"
    SKIPPED = "skipped"
    CONFLICT = "conflict"


class PassResult(StrEnum):
    """How a whole pass ended (``reconciler_reconcile_total{result}``)."""

    CONVERGED = "converged"
    CHANGED = "changed"
    WAITING = "waiting"
    FAILED = "failed"
    INVALID = "invalid"
    TRANSIENT = "transient"
    STALLED = "stalled"


OBJECT_KINDS = ("Strategy", "Config", "Model")
