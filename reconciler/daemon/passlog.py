"""The log's account of a pass: a line per action that did or decided something, and one
for the pass (what, where, which revision, the result). Objects found in sync are logged
at debug: at info a quiet fleet logs one line a pass."""

from __future__ import annotations

import logging

from reconciler.execute.executor import ActionResult as Outcome
from reconciler.logs import fields
from reconciler.passes import PassOutcome
from reconciler.vocabulary import ActionResult, PassResult

log = logging.getLogger(__name__)

_PASS_LEVELS = {PassResult.CONVERGED: logging.INFO, PassResult.CHANGED: logging.INFO,
                PassResult.WAITING: logging.INFO, PassResult.TRANSIENT: logging.WARNING,
                PassResult.FAILED: logging.ERROR, PassResult.INVALID: logging.ERROR,
                PassResult.STALLED: logging.ERROR}


def short_revision(revision: str | None) -> str:
    """``main@sha1:0123...`` as ``main@0123456789ab``, as the STATUS line shows it."""
    if not revision:
        return "-"
    return f"{revision.split('@')[0]}@{revision.split(':')[-1][:12]}"


def action_level(outcome: Outcome) -> int:
    result = outcome.result
    if result is ActionResult.IN_SYNC:
        return logging.DEBUG
    if result in (ActionResult.APPLIED, ActionResult.WAITING, ActionResult.SKIPPED):
        return logging.INFO
    if result is ActionResult.ROLLED_BACK or (result is ActionResult.FAILED
                                              and not outcome.transient):
        return logging.ERROR
    return logging.WARNING  # blocked, a conflict (re-planned), an outage (retried)


def log_pass(outcome: PassOutcome, seconds: float, next_in: float) -> None:
    report = outcome.report
    revision = report.revision if report is not None else outcome.revision
    for result in report.results if report is not None else ():
        action = result.action
        log.log(action_level(result),
                f"{result.result} {action.op} {action.kind}/{action.name} on {action.target} "
                f"at {short_revision(revision)}: {result.message}",
                extra=fields(target=action.target, kind=action.kind, name=action.name,
                             revision=revision, op=str(action.op), result=str(result.result),
                             reason=str(action.reason) if action.reason else None))
    log.log(_PASS_LEVELS[outcome.result],
            f"pass {outcome.result} at {short_revision(revision)} in {seconds:.2f}s: "
            f"{outcome.message}; next pass in {next_in:.0f}s at the latest",
            extra=fields(revision=revision, result=str(outcome.result),
                         duration_seconds=round(seconds, 3), next_in_seconds=round(next_in)))
