"""Analysis: the pure judge (thresholds, baselines, limits), the halt event, the executor's
use of it with in-memory places, and how a plan shows it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from reconciler.analysis.judge import (
    CheckProgress,
    Verdict,
    judge_log,
    judge_value,
    no_data,
    overall,
)
from reconciler.analysis.runner import AnalysisReport, AnalysisRunner, Halt, Prepared, Subject
from reconciler.desired.documents import AnalysisCheck, Strategy, build
from reconciler.events import Event, EventType
from reconciler.execute.executor import Executor, Hooks
from reconciler.execute.interrupts import ActionInterrupt, Cause
from reconciler.journal import Journal
from reconciler.places import CommandResult
from reconciler.plan.planner import plan
from reconciler.plan.render import render_json, render_text
from reconciler.settings import AnalysisSettings, PrometheusSettings
from reconciler.vocabulary import JournalAction, Reason
from tests.builders import ORIGIN, desired, target
from tests.fakes import FakeFleet, FakeStore

OLD, NEW = b"OK = 1\n", b"OK = 2\n"
KEY = ("staging", "Strategy", "gepetto")


def check(**spec: Any) -> AnalysisCheck:
    document = {"metadata": {"name": "gepetto"}, "spec": {
        "source": "gepetto.py", "targets": ["staging"],
        "deliver": {"path": "strategies/gepetto.py"},
        "restart": {"command": ["restart"]},
        "analysis": [{"name": "error-rate", "interval": "1s", "count": 3, **spec}]}}
    strategy: Strategy = build("Strategy", document, ORIGIN)
    return strategy.analysis[0]


def prometheus(**spec: Any) -> AnalysisCheck:
    return check(prometheus={"query": "rate", **spec})


def test_thresholds_fail_a_measurement_and_say_which_bound() -> None:
    spec = prometheus(max=0.05, min=1e-6).prometheus
    assert spec is not None
    assert judge_value(spec, 0.01, None, 1.0).verdict is Verdict.PASS
    above = judge_value(spec, 0.3, None, 1.0)
    assert above.verdict is Verdict.FAIL and above.why == "0.3 > max 0.05"
    assert judge_value(spec, 0.0, None, 1.0).why == "0 < min 1e-06"
    assert judge_value(spec, None, None, 1.0).verdict is Verdict.INCONCLUSIVE
    assert judge_value(spec, float("nan"), None, 1.0).verdict is Verdict.INCONCLUSIVE


def test_a_baseline_catches_a_rise_below_the_fixed_bar() -> None:
    fixed = prometheus(max=0.05).prometheus
    compared = prometheus(max=0.05, baseline={"before": True, "maxRatio": 2}).prometheus
    assert fixed is not None and compared is not None
    assert judge_value(fixed, 0.02, 0.001, 1.0).verdict is Verdict.PASS
    caught = judge_value(compared, 0.02, 0.001, 1.0)
    assert caught.verdict is Verdict.FAIL and caught.why == "0.02 > 2 x baseline 0.001"
    assert judge_value(compared, 0.02, None, 1.0).verdict is Verdict.INCONCLUSIVE


def test_with_both_bounds_a_value_must_exceed_both_to_fail() -> None:
    spec = prometheus(baseline={"query": "old", "maxRatio": 2, "maxIncrease": 0.01}).prometheus
    assert spec is not None
    assert judge_value(spec, 0.005, 0.0, 1.0).verdict is Verdict.PASS  # ratio only
    assert judge_value(spec, 0.5, 0.3, 1.0).verdict is Verdict.PASS  # increase only
    assert judge_value(spec, 0.7, 0.3, 1.0).verdict is Verdict.FAIL


def test_log_counts_and_rates() -> None:
    counted = check(log={"pattern": "ERROR", "path": "a.log", "maxCount": 2}).log
    rated = check(log={"pattern": "ERROR", "path": "a.log", "maxPerMinute": 6}).log
    assert counted is not None and rated is not None
    assert judge_log(counted, 2, 10.0, 10.0).verdict is Verdict.PASS
    assert judge_log(counted, 3, 10.0, 10.0).why == "3 matching lines > maxCount 2"
    assert judge_log(rated, 1, 10.0, 10.0).verdict is Verdict.PASS  # 6 a minute
    assert judge_log(rated, 2, 10.0, 10.0).verdict is Verdict.FAIL  # 12 a minute


def test_limits_decide_a_check() -> None:
    spec = check(prometheus={"query": "rate", "max": 1}, failureLimit=1, inconclusiveLimit=1)
    progress = CheckProgress(spec, spec.measurements(0.0))
    assert spec.prometheus is not None
    progress.add(judge_value(spec.prometheus, 2, None, 1.0))
    assert progress.verdict is None  # one failure tolerated
    progress.add(no_data("the query returned no data", 2.0))
    assert progress.verdict is None  # one without data tolerated
    progress.add(judge_value(spec.prometheus, 0.5, None, 3.0))
    assert progress.verdict is Verdict.PASS and progress.taken == 3

    failing = CheckProgress(spec, 3)
    failing.add(judge_value(spec.prometheus, 2, None, 1.0))
    failing.add(judge_value(spec.prometheus, 3, None, 2.0))
    assert failing.verdict is Verdict.FAIL and "limit 1" in failing.why

    fatal = CheckProgress(spec, 3)
    fatal.add(no_data("Prometheus refused the query (bad_data)", 1.0, fatal=True))
    assert fatal.verdict is Verdict.INCONCLUSIVE


def test_a_failure_decides_at_once_and_inconclusive_waits_for_the_others() -> None:
    one, other = prometheus(max=1), prometheus(max=1)
    first, second = CheckProgress(one, 3), CheckProgress(other, 3)
    first.add(no_data("no data", 1.0, fatal=True))
    assert overall([first, second]) == (None, None)
    assert other.prometheus is not None
    second.add(judge_value(other.prometheus, 5, None, 1.0))
    assert overall([first, second]) == (Verdict.FAIL, second)


def test_the_count_defaults_to_the_soak() -> None:
    spec = check(prometheus={"query": "q", "max": 1}, count=None, interval="2s")
    assert spec.count is None
    assert spec.measurements(10.0) == 5 and spec.duration_seconds(10.0) == 10.0
    short = check(prometheus={"query": "q", "max": 1}, count=None, interval="200ms")
    assert short.measurements(0.6) == 3  # not 2: 0.6 / 0.2 is 2.9999999999999996 in floats


def test_placeholders_are_filled() -> None:
    subject = Subject("edge", "Strategy", "app", "main@sha1:abc", "f00")
    assert subject.fill('rate(x{target="{{target}}", rev="{{ revision }}"}[1m])') == \
        'rate(x{target="edge", rev="main@sha1:abc"}[1m])'


def test_the_halt_event_follows_the_callers_event() -> None:
    outer = threading.Event()
    halt = Halt(outer)
    assert not halt.is_set() and not halt.wait(0.01)
    threading.Timer(0.05, outer.set).start()
    assert halt.wait(30)
    own = Halt(threading.Event())
    own.set()
    assert own.is_set() and own.wait(0)


class World:
    def __init__(self, tmp_path: Path, analysis: list[dict[str, Any]],
                 health: dict[str, Any] | None = None) -> None:
        self.store = FakeStore()
        self.fleet = FakeFleet(self.store)
        self.journal = Journal(tmp_path / "journal.db")
        spec: dict[str, Any] = {"source": "gepetto.py", "targets": ["staging"],
                                "deliver": {"path": "strategies/gepetto.py"},
                                "restart": {"command": ["restart"]}, "analysis": analysis}
        if health:
            spec["health"] = health
        self.strategy: Strategy = build("Strategy", {"metadata": {"name": "gepetto"},
                                                     "spec": spec}, ORIGIN)
        self.state = desired(targets=(target("staging"),), strategies=(self.strategy,),
                             contents={"gepetto": NEW})
        self.place = self.fleet.place(self.state.targets["staging"])
        self.place.files["strategies/gepetto.py"] = OLD
        self.events: list[Event] = []

    def run(self) -> tuple[str, str]:
        seen = self.fleet.observe(self.state.targets["staging"], ["strategies/gepetto.py"], [])
        planned = plan(self.state, {"staging": seen}, self.journal.history(0.0), 0.0)
        executor = Executor(lambda t: self.fleet, self.store, self.journal, threading.Event(),
                            hooks=Hooks(event=self.events.append))
        result = executor.execute(planned, self.state, 1).results[0]
        return result.result, result.message


COMMAND_CHECK = {"name": "smoke", "interval": "10ms", "count": 3, "command": ["smoke"]}


def test_a_failing_command_check_rolls_back_and_names_the_check(tmp_path: Path) -> None:
    world = World(tmp_path, [COMMAND_CHECK])
    world.place.command_results = [True, False]
    result, message = world.run()
    assert result == "rolled-back"
    assert "check smoke (smoke)" in message
    assert world.place.files["strategies/gepetto.py"] == OLD
    assert world.place.calls.count("command smoke") == 2  # no measurement after the failure
    known = world.journal.object(KEY)
    assert known is not None and "check smoke" in known["message"]
    analysis = world.journal.analyses()[KEY]
    assert analysis["outcome"] == "fail" and analysis["decidedBy"] == "smoke"
    told = [e for e in world.events if e.type is not EventType.PROGRESSING]
    assert [e.type for e in told] == [EventType.ROLLED_BACK], "told once, with the analysis"
    assert told[0].reason == Reason.ANALYSIS_FAILED


def test_a_passing_analysis_applies_after_every_measurement(tmp_path: Path) -> None:
    world = World(tmp_path, [COMMAND_CHECK], health={"command": ["probe"]})
    result, _ = world.run()
    assert result == "applied"
    assert world.place.calls.count("command smoke") == 3
    assert "check Strategy/gepetto" in world.place.calls  # the health check ran too
    phases = [e.phase for e in world.journal.events("gepetto")
              if e.action == JournalAction.ANALYSIS]
    assert phases == ["intent", "done"]


def test_a_failing_health_check_ends_the_analysis(tmp_path: Path) -> None:
    world = World(tmp_path, [{**COMMAND_CHECK, "interval": "1h"}],
                  health={"command": ["probe"]})
    world.place.check_results = [False]
    result, message = world.run()
    assert result == "rolled-back" and "health check failed" in message
    assert "command smoke" not in world.place.calls


def test_a_plan_shows_each_check_and_its_duration(tmp_path: Path) -> None:
    world = World(tmp_path, [{"name": "errors", "interval": "30s",
                              "prometheus": {"query": "sum(rate(e[1m]))", "max": 0.1}},
                             {**COMMAND_CHECK}], health={"command": ["probe"], "soak": "5m"})
    seen = world.fleet.observe(world.state.targets["staging"], ["strategies/gepetto.py"], [])
    planned = plan(world.state, {"staging": seen}, world.journal.history(0.0), 0.0)
    text = render_text(planned, {}, {})
    assert "then analysis: errors: prometheus sum(rate(e[1m])), every 30s x 10 (5m)" in text
    document = json.loads(render_json(planned, {}, {}))
    assert document["actions"][0]["analysis"] == [
        {"check": "errors", "seconds": 300.0, "deferred": None,
         "detail": "errors: prometheus sum(rate(e[1m])), every 30s x 10 (5m)"},
        {"check": "smoke", "seconds": 0.03, "deferred": None,
         "detail": "smoke: smoke, every 10ms x 3 (30ms)"}]


def test_a_stop_during_the_analysis_undoes_without_a_mark(tmp_path: Path) -> None:
    world = World(tmp_path, [{**COMMAND_CHECK, "interval": "1h"}])
    stop = threading.Event()
    seen = world.fleet.observe(world.state.targets["staging"], ["strategies/gepetto.py"], [])
    planned = plan(world.state, {"staging": seen}, world.journal.history(0.0), 0.0)
    executor = Executor(lambda t: world.fleet, world.store, world.journal, stop)
    threading.Timer(0.2, stop.set).start()
    result = executor.execute(planned, world.state, 1).results[0]
    assert result.result == "skipped" and "stop" in result.message
    assert world.place.files["strategies/gepetto.py"] == OLD  # undone
    known = world.journal.object(KEY)
    assert known is not None and known["failed_digest"] is None  # not the commit's fault
    assert world.journal.analyses()[KEY]["outcome"] == "halted"


def test_a_model_whose_analysis_fails_points_back(tmp_path: Path) -> None:
    store = FakeStore()
    fleet = FakeFleet(store)
    journal = Journal(tmp_path / "journal.db")
    v1, v2 = store.put(b"weights v1"), store.put(b"weights v2")
    spec = {"targets": ["staging"], "artifact": {"uri": "policy.pt", "sha256": v2},
            "pointer": {"path": "models/policy.pt"}, "restart": {"command": ["restart"]},
            "analysis": [COMMAND_CHECK]}
    model = build("Model", {"metadata": {"name": "policy"}, "spec": spec}, ORIGIN)
    state = desired(targets=(target("staging"),), models=(model,),
                    files={"policy.pt": b"weights v2"})
    place = fleet.place(state.targets["staging"])
    place.pointers["models/policy.pt"] = v1
    place.command_results = [False]
    seen = fleet.observe(state.targets["staging"], [], ["models/policy.pt"])
    planned = plan(state, {"staging": seen}, journal.history(0.0), 0.0)
    result = Executor(lambda t: fleet, store, journal, threading.Event()).execute(
        planned, state, 1).results[0]
    assert result.result == "rolled-back" and "check smoke" in result.message
    assert place.pointers["models/policy.pt"] == v1
    assert v2 not in journal.canonical_digests("policy")


class FakePrometheus:
    """An HTTP server answering every instant query with ``value``."""

    def __init__(self) -> None:
        self.value = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.dumps({"status": "success", "data": {"resultType": "vector",
                                   "result": [{"metric": {}, "value": [0, str(outer.value)]}]}})
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def test_finishing_a_change_after_a_crash_keeps_the_baseline_from_before_its_write(
        tmp_path: Path) -> None:
    server = FakePrometheus()
    world = World(tmp_path, [{"name": "errors", "interval": "10ms", "count": 2,
                              "prometheus": {"query": "errors",
                                             "baseline": {"before": True, "maxRatio": 2}}}])
    settings = AnalysisSettings(PrometheusSettings(server.url))
    crashes = [RuntimeError("the host went away mid-restart")]

    def restart(*args: Any) -> Any:
        if crashes:
            raise crashes.pop()
        return CommandResult(True, "restarted")

    world.place.restart = restart  # type: ignore[method-assign]
    try:
        server.value = 0.001  # the old content's error rate
        seen = world.fleet.observe(world.state.targets["staging"], ["strategies/gepetto.py"],
                                   [])
        first = plan(world.state, {"staging": seen}, world.journal.history(0.0), 0.0)
        executor = Executor(lambda t: world.fleet, world.store, world.journal,
                            threading.Event(), analysis=settings)
        assert executor.execute(first, world.state, 1).results[0].result == "failed"
        assert world.place.files["strategies/gepetto.py"] == NEW  # written, never checked
        server.value = 0.02  # the new content's: measured now, it would be its own baseline
        seen = world.fleet.observe(world.state.targets["staging"], ["strategies/gepetto.py"],
                                   [])
        second = plan(world.state, {"staging": seen}, world.journal.history(0.0), 0.0)
        assert second.actions[0].finishes
        result = executor.execute(second, world.state, 2).results[0]
        assert result.result == "rolled-back", result.message
        assert "0.02 > 2 x baseline 0.001" in result.message
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_an_http_check_answering_an_error_rolls_back_and_progress_is_reported(
        tmp_path: Path) -> None:
    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/ready"
    try:
        world = World(tmp_path, [{"name": "ready", "interval": "10ms", "count": 3,
                                  "failureLimit": 1, "http": {"url": url}}])
        progress: list[str] = []
        seen = world.fleet.observe(world.state.targets["staging"], ["strategies/gepetto.py"],
                                   [])
        planned = plan(world.state, {"staging": seen}, world.journal.history(0.0), 0.0)
        result = Executor(lambda t: world.fleet, world.store, world.journal,
                          threading.Event(), hooks=Hooks(progress=progress.append)).execute(
            planned, world.state, 1).results[0]
        assert result.result == "rolled-back"
        assert f"GET {url} answered 503, expected 200 (2 failed measurements, limit 1)" \
            in result.message
        assert "analysing Strategy/gepetto on staging: ready 2/3" in progress
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_halt_during_a_slow_query_ends_the_analysis_without_a_verdict() -> None:
    """The query in flight is cut off at once, and what it did not measure is not counted
    as missing data: a suspension or a newer revision decides, not an inconclusive check."""
    with silent_prometheus() as settings:
        runner = AnalysisRunner(AnalysisSettings(settings))
        prepared = Prepared((prometheus(max=1),), Subject("staging", "Strategy", "gepetto",
                                                          "r1", "d1"), FakeFleet(FakeStore())
                            .place(target("staging")).workload("Strategy", "gepetto", None,
                                                               "d1", "r1"))
        halt = Halt(threading.Event())
        threading.Timer(1.3, halt.set).start()  # while the first measurement's query hangs
        report = runner.run(prepared, 0.0, halt)
    assert report.verdict is None, report.message
    assert report.checks[0].inconclusive == 0


def test_an_infinite_value_fails_its_bound_and_is_recorded_as_valid_json() -> None:
    """Prometheus answers ``+Inf`` for x/0 (an error ratio with no requests): it crosses a
    ``max``, and the journal, ``status --output json`` and event payloads stay strict JSON
    (``Infinity`` is not JSON; jq and webhook receivers refuse it)."""
    spec = prometheus(max=0.05, baseline={"before": True, "maxIncrease": 0.01}).prometheus
    assert spec is not None
    measured = judge_value(spec, float("inf"), float("-inf"), 1.0)
    assert measured.verdict is Verdict.FAIL and measured.why == "inf > max 0.05"
    progress = CheckProgress(prometheus(max=0.05), 3)
    progress.add(measured)
    report = AnalysisReport(progress.verdict, progress, (progress,))
    shown = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert shown["checks"]["error-rate"]["measurements"][0]["value"] == "+Inf"
    assert shown["checks"]["error-rate"]["measurements"][0]["baseline"] == "-Inf"
    assert json.loads(json.dumps(report.values(), allow_nan=False)) == {"error-rate": "+Inf"}


def test_a_suspension_during_the_analysis_leaves_the_change_in_place_unmarked(
        tmp_path: Path) -> None:
    world = World(tmp_path, [{**COMMAND_CHECK, "interval": "1h"}],
                  health={"command": ["probe"], "soak": "2h"})
    interrupt = ActionInterrupt(threading.Event())
    seen = world.fleet.observe(world.state.targets["staging"], ["strategies/gepetto.py"], [])
    planned = plan(world.state, {"staging": seen}, world.journal.history(0.0), 0.0)
    executor = Executor(lambda t: world.fleet, world.store, world.journal, interrupt)
    threading.Timer(0.3, interrupt.fire, (Cause.SUSPENDED, "staging suspended by ops")).start()
    result = executor.execute(planned, world.state, 1).results[0]
    assert result.result == "waiting" and "suspended by ops" in result.message
    assert world.place.files["strategies/gepetto.py"] == NEW  # left in place, not undone
    known = world.journal.object(KEY)
    assert known is not None and known["failed_digest"] is None
    assert known["reason"] == Reason.SUSPENDED
    phases = [e.phase for e in world.journal.events("gepetto")
              if e.action == JournalAction.ANALYSIS]
    assert phases == ["intent", "interrupted"]  # ended, not failed
    assert world.journal.analyses()[KEY]["outcome"] == "halted"


def test_a_check_with_no_data_at_all_is_inconclusive_even_within_its_limit() -> None:
    """Two measurements, both without data, within the default inconclusiveLimit of 2: the
    check judged nothing, so it must hold, not pass (a short soak, Prometheus down)."""
    spec = check(prometheus={"query": "rate", "max": 1}, count=2)
    progress = CheckProgress(spec, spec.measurements(0.0))
    progress.add(no_data("Prometheus at http://p is unreachable", 1.0))
    progress.add(no_data("the query returned no data", 2.0))
    assert progress.verdict is Verdict.INCONCLUSIVE
    assert "no measurement had data" in progress.why
    assert overall([progress]) == (Verdict.INCONCLUSIVE, progress)


def test_a_suspension_while_the_baseline_is_asked_changes_nothing_and_says_suspended(
        tmp_path: Path) -> None:
    world = World(tmp_path, [{"name": "errors", "interval": "1s", "count": 2,
                              "prometheus": {"query": "errors", "max": 1}}])
    interrupt = ActionInterrupt(threading.Event())
    seen = world.fleet.observe(world.state.targets["staging"], ["strategies/gepetto.py"], [])
    planned = plan(world.state, {"staging": seen}, world.journal.history(0.0), 0.0)
    with silent_prometheus() as settings:
        executor = Executor(lambda t: world.fleet, world.store, world.journal, interrupt,
                            analysis=AnalysisSettings(settings))
        threading.Timer(0.3, interrupt.fire,
                        (Cause.SUSPENDED, "staging suspended by ops")).start()
        result = executor.execute(planned, world.state, 1).results[0]
    assert result.result == "waiting" and "suspended by ops" in result.message
    assert world.place.files["strategies/gepetto.py"] == OLD  # nothing was written
    known = world.journal.object(KEY)
    assert known is not None and known["reason"] == Reason.SUSPENDED
    assert known["failed_digest"] is None


@contextlib.contextmanager
def silent_prometheus() -> Iterator[PrometheusSettings]:
    """A server that takes every query and never answers (until the test ends)."""
    release = threading.Event()

    class Silent(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            release.wait(30)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield PrometheusSettings(f"http://127.0.0.1:{httpd.server_address[1]}",
                                 timeout_seconds=30)
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
