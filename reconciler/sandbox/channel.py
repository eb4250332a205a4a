"""What a sandboxed child may say, checked before any of it reaches the daemon's own code.

Children are repository code (or run it), so their output is hostile input: each line is
one JSON object, parsed without NaN or Infinity, and each event type has an exact shape:
known keys only, types and ranges checked, opponent names from the gauntlet's own list,
game counts non-negative and never decreasing. Anything else raises :class:`Malformed`
with a message for the check's status; nothing malformed reaches metrics (no new label
values), the journal or the summaries built from evidence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 2000  # characters of a child's free text that reach a status or the journal


class Malformed(Exception):
    """A child's output broke its contract."""


def _reject_constant(name: str) -> Any:
    raise Malformed(f"{name} is not a number JSON allows")


def parse_object(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line, parse_constant=_reject_constant)
    except ValueError:
        shown = line[:60] + ("..." if len(line) > 60 else "")
        raise Malformed(f"not a JSON object: {shown!r}") from None
    if not isinstance(value, dict):
        raise Malformed("not a JSON object")
    return value


def _keys(event: dict[str, Any], required: Iterable[str], optional: Iterable[str] = ()) \
        -> None:
    required = set(required)
    missing = required - event.keys()
    extra = event.keys() - required - set(optional)
    if missing:
        raise Malformed(f"{event.get('event', 'report')} lacks {', '.join(sorted(missing))}")
    if extra:
        raise Malformed(f"{event.get('event', 'report')} has unknown fields "
                        f"{', '.join(sorted(extra)[:5])}")


def _text(value: Any, name: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{name} must be a string")
    return value[:limit]


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Malformed(f"{name} must be a non-negative integer, not {value!r}"[:200])
    return value


def _number(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) \
            or not low <= value <= high:
        raise Malformed(f"{name} must be a number in [{low}, {high}], not {value!r}"[:200])
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise Malformed(f"{name} must be true or false")
    return value


@dataclass(frozen=True, slots=True)
class StrategyReport:
    outcome: str  # ok, entrypoint, exit, raise
    detail: str = ""
    line: int = 1


def strategy_report(line: str | None) -> StrategyReport:
    """The strategy worker's one-line report."""
    if line is None:
        raise Malformed("it wrote no report")
    report = parse_object(line)
    outcome = report.get("outcome")
    if outcome == "ok":
        _keys(report, ("outcome",))
        return StrategyReport("ok")
    if outcome == "entrypoint":
        _keys(report, ("outcome", "detail"))
        return StrategyReport("entrypoint", _text(report["detail"], "detail"))
    if outcome in ("exit", "raise"):
        _keys(report, ("outcome", "detail", "line"))
        return StrategyReport(outcome, _text(report["detail"], "detail"),
                              max(1, _count(report["line"], "line")))
    raise Malformed(f"unknown outcome {str(outcome)[:40]!r}")


_OPPONENT_KEYS = ("opponent", "minScore", "score", "interval", "games", "played", "passed",
                  "reason", "pentanomial")
# What the sequential test adds when it reports its state (gauntlet/match.py).
_OPPONENT_OPTIONAL = ("decision", "llr", "inconclusive", "expectedMoreGames")


class GauntletEvents:
    """Checks the gauntlet worker's event lines, in order, for one gauntlet."""

    def __init__(self, opponents: Iterable[str]) -> None:
        self._known = frozenset(opponents)
        self._games: dict[str, int] = {}

    def _opponent(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self._known:
            raise Malformed(f"opponent {str(value)[:40]!r} is not one the gauntlet declares")
        return value

    def _outcome(self, entry: Any) -> dict[str, Any]:
        """An opponent's outcome, as in progress events and the result's list."""
        if not isinstance(entry, dict):
            raise Malformed("an opponent's outcome must be an object")
        if "skipped" in entry:
            _keys(entry, ("opponent", "skipped", "passed"))
            self._opponent(entry["opponent"])
            _text(entry["skipped"], "skipped")
            _flag(entry["passed"], "passed")
            return entry
        _keys(entry, _OPPONENT_KEYS, _OPPONENT_OPTIONAL)
        self._opponent(entry["opponent"])
        if "decision" in entry and entry["decision"] not in ("pass", "fail", "inconclusive",
                                                              None):
            raise Malformed(f"decision {str(entry['decision'])[:40]!r} is not one the test makes")
        if "llr" in entry:
            _number(entry["llr"], "llr", -1e6, 1e6)
        if "inconclusive" in entry:
            _flag(entry["inconclusive"], "inconclusive")
        if "expectedMoreGames" in entry:
            _count(entry["expectedMoreGames"], "expectedMoreGames")
        _number(entry["minScore"], "minScore", 0, 1)
        _number(entry["score"], "score", 0, 1)
        interval = entry["interval"]
        if not isinstance(interval, list) or len(interval) != 2:
            raise Malformed("interval must be [low, high]")
        for bound in interval:
            _number(bound, "interval", -1, 2)
        _count(entry["games"], "games")
        _count(entry["played"], "played")
        _flag(entry["passed"], "passed")
        if entry["reason"] is not None:
            _text(entry["reason"], "reason", 200)
        counts = entry["pentanomial"]
        if not isinstance(counts, list) or len(counts) > 5:
            raise Malformed("pentanomial must be a list of at most 5 counts")
        for count in counts:
            _count(count, "pentanomial")
        return entry

    def accept(self, line: str) -> dict[str, Any]:
        """The event, valid; Malformed otherwise."""
        event = parse_object(line)
        kind = event.get("event")
        if kind == "start":
            _keys(event, ("event", "device"))
            _text(event["device"], "device", 40)
        elif kind == "fetch":
            _keys(event, ("event", "role", "uri"))
            if event["role"] not in ("candidate", "previous"):
                raise Malformed("fetch role must be candidate or previous")
            _text(event["uri"], "uri")
        elif kind == "progress":
            _keys(event, ("event", *_OPPONENT_KEYS), _OPPONENT_OPTIONAL)
            self._outcome({k: v for k, v in event.items() if k != "event"})
            opponent, games = event["opponent"], event["games"]
            if games < self._games.get(opponent, 0):
                raise Malformed(f"games for {opponent} went down from "
                                f"{self._games[opponent]} to {games}")
            self._games[opponent] = games
        elif kind == "result":
            _keys(event, ("event", "passed", "opponents", "device", "seconds", "gpuSeconds"),
                  ("fusedRules", "inconclusive", "reason"))
            _flag(event["passed"], "passed")
            for flag in ("fusedRules", "inconclusive"):
                if flag in event:
                    _flag(event[flag], flag)
            if "reason" in event and event["reason"] not in ("GateInconclusive", "GateFailed",
                                                              "GatePassed"):
                raise Malformed(f"result reason {str(event['reason'])[:40]!r} is not a verdict")
            if not isinstance(event["opponents"], list) \
                    or len(event["opponents"]) > len(self._known):
                raise Malformed("opponents must list at most the declared opponents")
            for entry in event["opponents"]:
                self._outcome(entry)
            _text(event["device"], "device", 40)
            _number(event["seconds"], "seconds", 0)
            _number(event["gpuSeconds"], "gpuSeconds", 0)
        elif kind == "error":
            _keys(event, ("event", "error"))
            event["error"] = _text(event["error"], "error")
        else:
            raise Malformed(f"unknown event {str(kind)[:40]!r}")
        return event


def metrics_object(line: str | None) -> dict[str, Any]:
    """A metrics command's last line: a flat JSON object of at most 256 metrics."""
    if line is None:
        raise Malformed("it printed nothing")
    metrics = parse_object(line)
    if len(metrics) > 256:
        raise Malformed("more than 256 metrics")
    for name in metrics:
        if len(name) > 200:
            raise Malformed("a metric name longer than 200 characters")
    return metrics


@dataclass(frozen=True, slots=True)
class RemoteOutcome:
    """A sandbox run's outcome as a pod reports it (``sandbox: job``): what a local run's
    Outcome holds, less the log tail, which stays in the pod."""

    timed_out: bool
    returncode: int
    lines: tuple[str, ...]
    violation: str | None


def remote_outcome(line: str | None, *, max_bytes: int, max_lines: int,
                   max_line_chars: int) -> RemoteOutcome:
    """The last line of a check pod's log: one object, exact keys, every size bounded.
    The lines inside are the channel lines of the run and are validated again by whoever
    reads them (a strategy report by ``strategy_report``)."""
    if line is None or not line.strip():
        raise Malformed("the pod wrote no report")
    if len(line.encode()) > max_bytes:
        raise Malformed(f"its report is longer than {max_bytes} bytes")
    report = parse_object(line)
    _keys(report, ("timedOut", "returncode", "lines", "violation"))
    returncode = report["returncode"]
    if not isinstance(returncode, int) or isinstance(returncode, bool) \
            or not -255 <= returncode <= 255:
        raise Malformed("returncode must be an integer in [-255, 255]")
    lines = report["lines"]
    if not isinstance(lines, list) or len(lines) > max_lines:
        raise Malformed(f"lines must be a list of at most {max_lines} strings")
    for entry in lines:
        if not isinstance(entry, str) or len(entry) > max_line_chars:
            raise Malformed(f"lines must be strings of at most {max_line_chars} characters")
    violation = report["violation"]
    return RemoteOutcome(_flag(report["timedOut"], "timedOut"), returncode, tuple(lines),
                         None if violation is None else _text(violation, "violation", 300))
