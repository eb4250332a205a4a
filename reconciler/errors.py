"""Typed failures: how the daemon should react decides the type, not where it came from.

The tree, and what each branch makes the daemon do::

    ReconcilerError            (reason: a PascalCase word from vocabulary.Reason, or an
    │                           adapter's own, e.g. ApiForbidden)
    ├── TransientError         retry with exponential backoff and jitter, capped; no mark on
    │                          the revision (network, git transport, API 5xx, a full disk)
    ├── StalledError           retrying cannot help: it needs a new commit or a person; the
    │                          status says what to change
    ├── WaitingError           requeue at ``not_before`` (epoch seconds): a soak, a window
    └── ReplanNeeded           the live state changed under a step (a pointer written by
                               someone else): stop the pass, observe again, plan again

Adapters raise these (a Kubernetes 403 leaves ``kube/`` as a StalledError with reason
ApiForbidden; 404/409/410 stay inside it). Anything else that escapes a step is sorted by
:func:`classify`, the only place that catches broadly: it turns any exception into an
:class:`Outcome`, so no exception ends the daemon.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from reconciler.redaction import redact_text
from reconciler.vocabulary import Reason


class ReconcilerError(Exception):
    """Base of the errors the daemon knows how to react to."""

    reason: str = "Failed"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TransientError(ReconcilerError):
    """Retry with exponential backoff: network, git transport, API 5xx."""

    reason: str = Reason.TRANSIENT_FAILURE


class StalledError(ReconcilerError):
    """Retrying cannot help: it needs a new commit or a person."""

    reason: str = Reason.STALLED


class WaitingError(ReconcilerError):
    """Not now: requeue at ``not_before``."""

    reason: str = Reason.SOAKING

    def __init__(self, message: str, *, not_before: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.not_before = not_before


class ReplanNeeded(ReconcilerError):
    """The live state changed under a step (a pointer written by someone else since it was
    read): stop the pass, observe again and plan again."""

    reason: str = Reason.REPLAN_NEEDED


class Disposition(StrEnum):
    TRANSIENT = "transient"
    STALLED = "stalled"
    WAITING = "waiting"
    REPLAN = "replan"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do about an exception: ``message`` names it for status and logs."""

    disposition: Disposition
    reason: str
    message: str
    not_before: float | None = None

    @property
    def transient(self) -> bool:
        return self.disposition is Disposition.TRANSIENT


# Resource shortages of the host: they pass when the operator (or time) frees them.
_HOST_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.EDQUOT, errno.ENOMEM,
                          errno.EAGAIN})


# SQLite's primary result codes for a damaged file (extended codes share the low byte).
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def is_sqlite_corruption(error: BaseException) -> bool:
    """A damaged database file, as opposed to a busy, full or unreadable one."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def classify(error: BaseException) -> Outcome:
    """The one except-ladder: any exception a step or a pass raised, as an outcome. Its
    message goes to status, the journal and logs, so URLs in it lose their credentials."""
    outcome = _classify(error)
    message = redact_text(outcome.message)
    return outcome if message == outcome.message else Outcome(
        outcome.disposition, outcome.reason, message, outcome.not_before)


def _classify(error: BaseException) -> Outcome:
    if isinstance(error, ReplanNeeded):
        return Outcome(Disposition.REPLAN, error.reason, str(error))
    if isinstance(error, WaitingError):
        return Outcome(Disposition.WAITING, error.reason, str(error), error.not_before)
    if isinstance(error, TransientError):
        return Outcome(Disposition.TRANSIENT, error.reason, str(error))
    if isinstance(error, ReconcilerError):
        return Outcome(Disposition.STALLED, error.reason, str(error))
    if isinstance(error, sqlite3.Error) and is_sqlite_corruption(error):
        # Damage found mid-run: retrying cannot mend the file; a person moves it aside.
        return Outcome(Disposition.STALLED, Reason.JOURNAL_CORRUPT,
                       f"the journal is damaged: {error} (docs/operations.md, 'A damaged "
                       "journal')")
    if isinstance(error, sqlite3.Error):
        # A full disk or a locked database: the journal refuses writes until it is freed.
        return Outcome(Disposition.TRANSIENT, Reason.JOURNAL_UNAVAILABLE,
                       f"the journal refused: {type(error).__name__}: {error}")
    if isinstance(error, OSError) and error.errno in _HOST_ERRNOS:
        return Outcome(Disposition.TRANSIENT, Reason.HOST_RESOURCES,
                       f"{type(error).__name__}: {error}")
    if isinstance(error, OSError):
        return Outcome(Disposition.STALLED, Reason.IO_ERROR, f"{type(error).__name__}: {error}")
    return Outcome(Disposition.STALLED, Reason.UNEXPECTED_ERROR,
                   f"unexpected {type(error).__name__}: {error} (a defect in reconciler: "
                   "please report it with the journal's history)")
