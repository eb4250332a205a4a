"""Judging measurements: thresholds, baselines and limits -> pass, fail or inconclusive.

Pure: no clock, no I/O. The runner (runner.py) measures and feeds :class:`CheckProgress`;
this module says what the numbers mean.

- A measurement *fails* when its value crosses a bound the check declares; it is
  *inconclusive* when there is nothing to judge (no series, a query or read error, a
  baseline without data).
- A check *fails* after more than ``failureLimit`` failed measurements, is *inconclusive*
  after more than ``inconclusiveLimit`` inconclusive ones (at once for an error no retry can
  mend: a malformed query), or when every planned measurement is taken and none had data
  (a check that judged nothing never passes), and *passes* when they are taken otherwise.
- The analysis fails as soon as one check fails; else it is inconclusive when one check is
  (once all are decided); else it passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.desired.documents import AnalysisCheck, Baseline, LogCheck, PrometheusCheck

KEPT_MEASUREMENTS = 20  # per check, in the journal: the newest ones (counts cover the rest)


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measurement: ``at`` seconds into the window; the value (None: no data), the
    baseline it was compared with, an error, and what it means."""

    at: float
    verdict: Verdict
    why: str
    value: float | None = None
    baseline: float | None = None
    error: str | None = None
    fatal: bool = False  # no retry can mend it (a malformed query): decides at once

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"at": round(self.at, 3), "verdict": self.verdict}
        if self.value is not None:
            shown["value"] = json_number(self.value)
        if self.baseline is not None:
            shown["baseline"] = json_number(self.baseline)
        if self.error is not None:
            shown["error"] = self.error
        return shown


def json_number(value: float) -> float | str:
    """``value`` for a JSON document: ``+Inf`` and ``-Inf`` as Prometheus writes them, since
    JSON has no infinity (``float()`` reads them back)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def _number(value: float) -> str:
    return f"{value:.6g}"


def judge_value(spec: PrometheusCheck, value: float | None, baseline: float | None,
                at: float) -> Measurement:
    """A Prometheus value against the check's thresholds and baseline."""
    if value is None or math.isnan(value):
        return Measurement(at, Verdict.INCONCLUSIVE, "the query returned no data")
    if spec.max is not None and value > spec.max:
        return Measurement(at, Verdict.FAIL, f"{_number(value)} > max {_number(spec.max)}",
                           value, baseline)
    if spec.min is not None and value < spec.min:
        return Measurement(at, Verdict.FAIL, f"{_number(value)} < min {_number(spec.min)}",
                           value, baseline)
    if spec.baseline is not None:
        if baseline is None or math.isnan(baseline):
            return Measurement(at, Verdict.INCONCLUSIVE, "the baseline has no data", value)
        exceeded = _beyond_baseline(spec.baseline, value, baseline)
        if exceeded is not None:
            return Measurement(at, Verdict.FAIL, exceeded, value, baseline)
    return Measurement(at, Verdict.PASS, f"{_number(value)} within bounds", value, baseline)


def _beyond_baseline(spec: Baseline, value: float, baseline: float) -> str | None:
    """Why ``value`` exceeds the baseline, or None. With both bounds declared it must exceed
    both: the ratio guards large values, the increase small ones (a baseline of 0 makes any
    ratio infinite)."""
    reasons = []
    if spec.max_ratio is not None:
        if value <= baseline * spec.max_ratio:
            return None
        reasons.append(f"{_number(value)} > {_number(spec.max_ratio)} x baseline "
                       f"{_number(baseline)}")
    if spec.max_increase is not None:
        if value - baseline <= spec.max_increase:
            return None
        reasons.append(f"{_number(value)} > baseline {_number(baseline)} + "
                       f"{_number(spec.max_increase)}")
    return " and ".join(reasons)


def judge_log(spec: LogCheck, matches: int, window_seconds: float, at: float) -> Measurement:
    """Matching lines in the window so far against a count or a rate per minute."""
    value = float(matches)
    if spec.max_count is not None and matches > spec.max_count:
        return Measurement(at, Verdict.FAIL, f"{matches} matching lines > maxCount "
                           f"{spec.max_count}", value)
    if spec.max_per_minute is not None:
        rate = matches * 60.0 / max(window_seconds, 1e-9)
        if rate > spec.max_per_minute:
            return Measurement(at, Verdict.FAIL, f"{_number(rate)} matching lines per minute "
                               f"> maxPerMinute {_number(spec.max_per_minute)}", value)
    return Measurement(at, Verdict.PASS, f"{matches} matching lines", value)


def no_data(why: str, at: float, *, fatal: bool = False) -> Measurement:
    return Measurement(at, Verdict.INCONCLUSIVE, why, error=why, fatal=fatal)


@dataclass
class CheckProgress:
    """One check's measurements so far and, once decided, its verdict."""

    check: AnalysisCheck
    planned: int
    kind: str = ""
    measurements: list[Measurement] = field(default_factory=list)
    taken: int = 0
    failures: int = 0
    inconclusive: int = 0
    verdict: Verdict | None = None
    why: str = ""

    def add(self, measurement: Measurement) -> None:
        if self.verdict is not None:
            return
        self.taken += 1
        self.measurements = [*self.measurements[-(KEPT_MEASUREMENTS - 1):], measurement]
        limit = self.check.failure_limit
        if measurement.verdict is Verdict.FAIL:
            self.failures += 1
            if self.failures > limit:
                self._decide(Verdict.FAIL, f"{measurement.why} ({self.failures} failed "
                             f"measurement{'s' if self.failures != 1 else ''}, limit {limit})")
                return
        elif measurement.verdict is Verdict.INCONCLUSIVE:
            self.inconclusive += 1
            limit = self.check.inconclusive_limit
            if measurement.fatal or self.inconclusive > limit:
                self._decide(Verdict.INCONCLUSIVE, f"{measurement.why} ({self.inconclusive} "
                             f"measurement{'s' if self.inconclusive != 1 else ''} without "
                             f"data, limit {limit})")
                return
        if self.taken >= self.planned and self.inconclusive == self.taken:
            self._decide(Verdict.INCONCLUSIVE, f"no measurement had data ({self.taken} "
                         f"taken); last: {measurement.why}")
        elif self.taken >= self.planned:
            self._decide(Verdict.PASS, f"{self.taken} measurements, {self.failures} failed, "
                         f"{self.inconclusive} without data; last: {measurement.why}")

    def _decide(self, verdict: Verdict, why: str) -> None:
        self.verdict, self.why = verdict, why

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind or self.check.kind, "subject": self.check.subject,
                "verdict": self.verdict, "why": self.why, "planned": self.planned,
                "taken": self.taken, "failures": self.failures,
                "inconclusive": self.inconclusive,
                "measurements": [m.to_json() for m in self.measurements]}

    @property
    def last_value(self) -> float | None:
        return next((m.value for m in reversed(self.measurements) if m.value is not None),
                    None)


def overall(progress: Sequence[CheckProgress]) -> tuple[Verdict | None, CheckProgress | None]:
    """The analysis's verdict and the check that decided it; (None, None) while undecided."""
    failed = next((p for p in progress if p.verdict is Verdict.FAIL), None)
    if failed is not None:
        return Verdict.FAIL, failed
    if any(p.verdict is None for p in progress):
        return None, None
    held = next((p for p in progress if p.verdict is Verdict.INCONCLUSIVE), None)
    if held is not None:
        return Verdict.INCONCLUSIVE, held
    return Verdict.PASS, None
