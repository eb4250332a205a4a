"""Typed failures: how the daemon should react decides the type, not where it came from."""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of the errors the daemon knows how to react to."""

    reason = "Failed"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TransientError(ReconcilerError):
    """Retry with exponential backoff: network, git transport, API 5xx."""

    reason = "TransientFailure"


class StalledError(ReconcilerError):
    """Retrying cannot help: it needs a new commit or a person."""

    reason = "Stalled"



class ReplanNeeded(ReconcilerError):
    """The live state changed under a step (a pointer written by someone else since it was
    read): stop the pass, observe again and plan again."""

    reason = "ReplanNeeded"
