"""Analysis during the soak, judged by a real Prometheus server scraping an exporter whose
error rate follows the content the daemon delivered: a rise is rolled back, a flat rate is
promoted, no data holds, a baseline catches what a fixed bar misses; a malformed query and
an unreachable server change nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.events import Event, EventType
from reconciler.execute.executor import Hooks
from reconciler.vocabulary import ActionResult, Condition, Reason
from tests.conftest import Result
from tests.fleet import HEALTHY, Fleet
from tests.prometheus import Prometheus, exporter, free_port, prometheus

ERROR_RATE = 'app_error_ratio{target="edge"}'


class Workload:
    """The error rate the delivered strategy causes: it reads the live file, so the rate
    moves exactly when the daemon's change does."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.calm = 0.01
        self.broken = 0.3

    def samples(self) -> dict[str, float]:
        try:
            content = (self.fleet.root / "app" / "app.py").read_text()
        except OSError:
            return {ERROR_RATE: self.calm}
        rate = self.broken if "ERRORS" in content else self.calm
        # Another target, still on the old revision: what the baseline query compares with.
        return {ERROR_RATE: rate, 'app_error_ratio{target="other"}': self.calm}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Fleet, Workload, Prometheus]]:
    fleet = Fleet(tmp_path)
    workload = Workload(fleet)
    with exporter(workload.samples) as address, prometheus(tmp_path, [address]) as server:
        fleet.settings_file.write_text(fleet.settings_file.read_text()
                                       + f"analysis:\n  prometheus: {{url: '{server.url}'}}\n")
        assert fleet.results(fleet.apply()) == {"Strategy/app": ActionResult.APPLIED,
                                                "Model/policy": ActionResult.APPLIED}
        server.wait_for(ERROR_RATE, workload.calm)
        yield fleet, workload, server


def analysed(fleet: Fleet, source: str, prometheus_spec: str, *, count: int = 4) -> None:
    fleet.strategy(source, extra=f"""  analysis:
    - name: error-rate
      interval: 300ms
      count: {count}
      prometheus: {prometheus_spec}
""")
    fleet.commit("strategy with an analysis")


def app_status(fleet: Fleet) -> dict[str, object]:
    journal = fleet.journal()
    try:
        row = journal.object(("edge", "Strategy", "app"))
        analysis = journal.analyses().get(("edge", "Strategy", "app"))
    finally:
        journal.close()
    assert row is not None
    return {**row, "analysis": analysis}


def test_a_rising_error_rate_is_rolled_back_and_the_values_are_kept(
        world: tuple[Fleet, Workload, Prometheus], cli: Callable[..., Result]) -> None:
    fleet, _, _ = world
    events: list[Event] = []
    analysed(fleet, HEALTHY + "ERRORS = True\n",
             f"{{query: '{ERROR_RATE.replace('edge', '{{target}}')}', max: 0.05}}")
    outcome = fleet.apply(Hooks(event=events.append))
    assert fleet.results(outcome)["Strategy/app"] == ActionResult.ROLLED_BACK
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY
    status = app_status(fleet)
    assert status["reason"] == Reason.ROLLED_BACK
    assert "check error-rate" in str(status["message"])
    assert "0.3 > max 0.05" in str(status["message"])
    analysis = status["analysis"]
    assert isinstance(analysis, dict)
    assert analysis["outcome"] == "fail" and analysis["decidedBy"] == "error-rate"
    values = [m.get("value") for m in analysis["checks"]["error-rate"]["measurements"]]
    assert 0.3 in values
    rolled = [e for e in events if e.type is EventType.ROLLED_BACK]
    assert len(rolled) == 1 and rolled[0].values == {"error-rate": 0.3}
    assert rolled[0].reason == Reason.ANALYSIS_FAILED
    history = cli("history", "app", "--config", str(fleet.settings_file))
    assert history.returncode == 0, history.stderr
    [outcome_line] = [line for line in history.stdout.splitlines()
                      if " analysis " in line and " failed " in line]
    assert "decidedBy=error-rate" in outcome_line and "values: error-rate=" in outcome_line
    assert outcome_line.rstrip().endswith("values: error-rate=0.3")


def test_a_flat_error_rate_is_promoted_with_its_measurements_in_status(
        world: tuple[Fleet, Workload, Prometheus], cli: Callable[..., Result]) -> None:
    fleet, _, _ = world
    analysed(fleet, HEALTHY + "VERSION = 2\n", f"{{query: '{ERROR_RATE}', max: 0.05}}")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == ActionResult.APPLIED
    assert "VERSION = 2" in (fleet.root / "app" / "app.py").read_text()
    shown = cli("status", "--config", str(fleet.settings_file), "--output", "json")
    assert shown.returncode == 0, shown.stderr
    app = next(o for o in json.loads(shown.stdout)["objects"] if o["name"] == "app")
    assert app["status"] == Condition.READY
    assert app["analysis"]["outcome"] == "pass"
    measured = app["analysis"]["checks"]["error-rate"]["measurements"]
    assert len(measured) == 4 and all(m["value"] == 0.01 for m in measured)


def test_no_data_holds_the_change_as_inconclusive_and_never_promotes_it(
        world: tuple[Fleet, Workload, Prometheus]) -> None:
    fleet, _, _ = world
    events: list[Event] = []
    analysed(fleet, HEALTHY + "VERSION = 3\n",
             "{query: 'app_never_exported_total', max: 1}")
    outcome = fleet.apply(Hooks(event=events.append))
    assert fleet.results(outcome)["Strategy/app"] == ActionResult.BLOCKED
    assert "VERSION = 3" in (fleet.root / "app" / "app.py").read_text()  # in place
    status = app_status(fleet)
    assert status["reason"] == Reason.ANALYSIS_INCONCLUSIVE
    assert status["status"] == Condition.STALLED
    assert "check error-rate" in str(status["message"])
    assert "no data" in str(status["message"])
    assert status["healthy_digest"] != status["attempted_digest"]  # never promoted
    assert [e.type for e in events] == [EventType.PROGRESSING, EventType.STALLED]
    # The next pass neither rolls it back nor analyses it again, and says why.
    again = fleet.apply()
    assert fleet.results(again)["Strategy/app"] == ActionResult.BLOCKED
    assert "VERSION = 3" in (fleet.root / "app" / "app.py").read_text()
    assert app_status(fleet)["reason"] == Reason.ANALYSIS_INCONCLUSIVE


def test_a_baseline_catches_a_rise_that_the_fixed_threshold_misses(
        world: tuple[Fleet, Workload, Prometheus]) -> None:
    fleet, workload, server = world
    workload.calm, workload.broken = 0.001, 0.02  # both below the fixed bar of 0.05
    server.wait_for(ERROR_RATE, 0.001)
    analysed(fleet, HEALTHY + "ERRORS = 'a few'\n",
             f"{{query: '{ERROR_RATE}', max: 0.05, baseline: {{before: true, maxRatio: 2}}}}")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == ActionResult.ROLLED_BACK
    status = app_status(fleet)
    assert "0.02 > 2 x baseline 0.001" in str(status["message"])
    analysis = status["analysis"]
    assert isinstance(analysis, dict)
    first = analysis["checks"]["error-rate"]["measurements"][-1]
    assert first["baseline"] == 0.001 and first["value"] == 0.02


def test_a_baseline_from_the_targets_still_on_the_old_revision(
        world: tuple[Fleet, Workload, Prometheus]) -> None:
    fleet, workload, server = world
    workload.calm, workload.broken = 0.001, 0.02
    server.wait_for('app_error_ratio{target="other"}', 0.001)
    analysed(fleet, HEALTHY + "ERRORS = 'some'\n",
             "{query: 'app_error_ratio{target=\"{{target}}\"}', baseline: "
             "{query: 'max(app_error_ratio{target!=\"{{target}}\"})', maxIncrease: 0.005}}")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == ActionResult.ROLLED_BACK
    assert "0.02 > baseline 0.001 + 0.005" in str(app_status(fleet)["message"])


def test_a_malformed_query_changes_nothing_and_shows_the_servers_error(
        world: tuple[Fleet, Workload, Prometheus]) -> None:
    fleet, _, _ = world
    restarts = (fleet.root / "restarts").read_text()
    analysed(fleet, HEALTHY + "VERSION = 4\n", "{query: 'sum(rate(app_error_ratio[1m]', max: 1}")
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] == ActionResult.BLOCKED
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY
    assert (fleet.root / "restarts").read_text() == restarts
    status = app_status(fleet)
    assert status["reason"] == Reason.ANALYSIS_UNAVAILABLE
    message = str(status["message"])
    assert "bad_data" in message and "parse error" in message
    assert "nothing was changed" in message


def test_an_unreachable_prometheus_changes_nothing_and_is_retried(
        world: tuple[Fleet, Workload, Prometheus]) -> None:
    fleet, _, server = world
    fleet.settings_file.write_text(fleet.settings_file.read_text().replace(
        server.url, f"http://127.0.0.1:{free_port()}"))
    analysed(fleet, HEALTHY + "VERSION = 5\n", f"{{query: '{ERROR_RATE}', max: 0.05}}")
    outcome = fleet.apply()
    assert outcome.report is not None
    result = next(r for r in outcome.report.results if r.action.kind == "Strategy")
    assert result.result == ActionResult.FAILED and result.transient
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY
    status = app_status(fleet)
    assert status["status"] == Condition.RECONCILING
    assert status["reason"] == Reason.ANALYSIS_UNAVAILABLE
    assert "unreachable" in str(status["message"])
    assert status["failed_digest"] is None  # the commit is not at fault: no mark
