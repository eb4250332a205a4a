"""Measuring a change while it soaks: the side effects around judge.py.

``prepare`` runs before the change is written: it asks Prometheus every query once (an
unreachable server or a malformed query stops the change before anything is touched), keeps
the values of ``baseline: {before: true}`` checks as their baselines, and starts the log
readers at the logs' current ends. ``run`` then measures each check every ``interval`` on
one thread, sleeping on the halt event until the next measurement is due (no polling of
its own), and returns as soon as the verdict is known or the event is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from reconciler.analysis.judge import (
    CheckProgress,
    Measurement,
    Verdict,
    json_number,
    judge_log,
    judge_value,
    no_data,
    overall,
)
from reconciler.analysis.prometheus import PrometheusClient, QueryError
from reconciler.desired.documents import AnalysisCheck
from reconciler.places import LogReader, LogUnavailable, Workload
from reconciler.probes import probe_http
from reconciler.settings import AnalysisSettings

HALT_SLICE_SECONDS = 0.2  # how soon a wait notices the caller's stop event


class AnalysisUnavailable(Exception):
    """The analysis cannot start, so nothing is changed. ``fatal``: the commit must change
    (a malformed query); ``transient``: the server may answer later (retried with backoff);
    neither: the settings or the host must change (retried at each pass)."""

    def __init__(self, message: str, *, fatal: bool = False, transient: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal
        self.transient = transient


class Halt(threading.Event):
    """Set by whichever of the analysis and the health check decides first, and set too
    while the caller's ``outer`` event is (a daemon stop, a suspension, a newer revision):
    waits notice it within :data:`HALT_SLICE_SECONDS`."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self._outer = outer

    def is_set(self) -> bool:
        return super().is_set() or self._outer.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = HALT_SLICE_SECONDS if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            super().wait(min(left, HALT_SLICE_SECONDS))
        return True


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose change is analysed: the ``{{placeholders}}`` of queries."""

    target: str
    kind: str
    name: str
    revision: str
    digest: str

    def fill(self, query: str) -> str:
        for key, value in (("target", self.target), ("kind", self.kind), ("name", self.name),
                           ("revision", self.revision), ("digest", self.digest)):
            query = query.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
        return query


@dataclass
class Prepared:
    """An analysis ready to run: its baselines and log readers, taken before the change."""

    checks: tuple[AnalysisCheck, ...]
    subject: Subject
    workload: Workload
    baselines: dict[str, float | None] = field(default_factory=dict)
    logs: dict[str, LogReader] = field(default_factory=dict)

    def plan_json(self, soak_seconds: float) -> dict[str, Any]:
        return {"checks": [{"name": c.name, "kind": c.kind, "subject": c.subject,
                            "intervalSeconds": c.interval_seconds,
                            "measurements": c.measurements(soak_seconds)}
                           for c in self.checks],
                "baselines": self.baselines_json()}

    def baselines_json(self) -> dict[str, float | str | None]:
        return {name: None if value is None else json_number(value)
                for name, value in self.baselines.items()}


@dataclass(frozen=True)
class AnalysisReport:
    """How an analysis ended. ``verdict`` None: it was halted before deciding."""

    verdict: Verdict | None
    decided_by: CheckProgress | None
    checks: tuple[CheckProgress, ...]

    @property
    def message(self) -> str:
        if self.verdict is None:
            return "analysis halted before a verdict"
        if self.decided_by is None:
            return f"analysis passed: {', '.join(p.check.name for p in self.checks)}"
        what = "failed" if self.verdict is Verdict.FAIL else "inconclusive"
        return f"analysis {what}: check {self.decided_by.check.name} " \
               f"({self.decided_by.check.subject}): {self.decided_by.why}"

    def values(self) -> dict[str, Any]:
        """check -> its last value (for events); the journal keeps every measurement."""
        return {p.check.name: None if p.last_value is None else json_number(p.last_value)
                for p in self.checks}

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.verdict or "halted",
                "decidedBy": self.decided_by.check.name if self.decided_by else None,
                "message": self.message,
                "checks": {p.check.name: p.to_json() for p in self.checks}}


class AnalysisRunner:
    def __init__(self, settings: AnalysisSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._prometheus = (PrometheusClient(settings.prometheus)
                            if settings.prometheus is not None else None)
        self._clock = clock

    def _client(self, check: AnalysisCheck) -> PrometheusClient:
        if self._prometheus is None:
            raise AnalysisUnavailable(f"analysis check {check.name} queries Prometheus, but "
                                      "reconciler.yaml sets no analysis.prometheus.url")
        return self._prometheus

    def prepare(self, checks: Sequence[AnalysisCheck], subject: Subject, workload: Workload,
                stop: threading.Event | None = None) -> Prepared:
        """Before the change: every query asked once, ``before`` baselines kept, log
        readers started; ``stop`` ends a query in flight. Raises
        :class:`AnalysisUnavailable` (nothing is changed then)."""
        prepared = Prepared(tuple(checks), subject, workload)
        for check in checks:
            if check.prometheus is not None:
                client = self._client(check)
                spec = check.prometheus
                try:
                    value = client.query(subject.fill(spec.query), stop)
                    if spec.baseline is not None and spec.baseline.query is not None:
                        client.query(subject.fill(spec.baseline.query), stop)
                except QueryError as error:
                    raise AnalysisUnavailable(f"analysis check {check.name}: {error}",
                                              fatal=error.fatal,
                                              transient=not error.fatal) from None
                if spec.baseline is not None and spec.baseline.before:
                    prepared.baselines[check.name] = value
            elif check.log is not None:
                try:
                    prepared.logs[check.name] = workload.log(check.log.path,
                                                             check.log.container)
                except LogUnavailable as error:
                    raise AnalysisUnavailable(f"analysis check {check.name}: {error}") \
                        from None
        return prepared

    def run(self, prepared: Prepared, soak_seconds: float, halt: threading.Event,
            on_measurement: Callable[[CheckProgress], None] = lambda progress: None,
            ) -> AnalysisReport:
        """Measure until the verdict is known (or ``halt`` is set)."""
        started = self._clock()
        progress = [CheckProgress(check, check.measurements(soak_seconds))
                    for check in prepared.checks]
        due = {p.check.name: started + p.check.interval_seconds for p in progress}
        matches = dict.fromkeys(prepared.logs, 0)
        while True:
            verdict, decided_by = overall(progress)
            if verdict is not None:
                return AnalysisReport(verdict, decided_by, tuple(progress))
            waiting = [p for p in progress if p.verdict is None]
            next_due = min(due[p.check.name] for p in waiting)
            if halt.wait(max(0.0, next_due - self._clock())):
                return AnalysisReport(None, None, tuple(progress))
            now = self._clock()
            for check_progress in waiting:
                name = check_progress.check.name
                if due[name] > now:
                    continue
                at = self._clock() - started
                measurement = self._measure(prepared, check_progress.check, at, matches, halt)
                if halt.is_set():  # cut off mid-measurement: not a lack of data
                    return AnalysisReport(None, None, tuple(progress))
                check_progress.add(measurement)
                on_measurement(check_progress)
                # A slow measurement never makes the next ones bunch up.
                due[name] = max(due[name] + check_progress.check.interval_seconds,
                                self._clock())
                if check_progress.verdict is Verdict.FAIL:
                    break  # the analysis has failed: roll back now, measure no more

    def _measure(self, prepared: Prepared, check: AnalysisCheck, at: float,
                 matches: dict[str, int], halt: threading.Event) -> Measurement:
        subject = prepared.subject
        if check.prometheus is not None:
            spec = check.prometheus
            client = self._client(check)
            try:
                value = client.query(subject.fill(spec.query), halt)
                baseline = prepared.baselines.get(check.name)
                if spec.baseline is not None and spec.baseline.query is not None:
                    baseline = client.query(subject.fill(spec.baseline.query), halt)
            except QueryError as error:
                return no_data(str(error), at, fatal=error.fatal)
            return judge_value(spec, value, baseline, at)
        if check.log is not None:
            try:
                lines = prepared.logs[check.name].lines()
            except LogUnavailable as error:
                return no_data(str(error), at)
            pattern = re2.compile(check.log.pattern)
            matches[check.name] += sum(1 for line in lines if pattern.search(line))
            return judge_log(check.log, matches[check.name], at, at)
        assert check.probe is not None
        probe = check.probe
        if probe.http_url is not None:
            ok, detail = probe_http(probe.http_url, probe.expect_status, probe.timeout_seconds)
        else:
            assert probe.command is not None
            result = prepared.workload.command(probe.command, probe.timeout_seconds)
            ok, detail = result.ok, result.detail
        return Measurement(at, Verdict.PASS if ok else Verdict.FAIL, detail)

