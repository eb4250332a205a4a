"""deploy/monitoring: the alert rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), every alert has a test where it fires, and the dashboard is
well-formed (its queries run against a real Prometheus in tests/e2e/test_dashboard.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

MONITORING = REPO_ROOT / "deploy" / "monitoring"
RULES = MONITORING / "reconciler.rules.yml"
RULE_TESTS = MONITORING / "reconciler.rules.test.yml"
DASHBOARD = MONITORING / "dashboard.json"


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: scripts/test.sh installs Debian's prometheus")
    return subprocess.run([found, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_unit_tests_catch_a_changed_rule(tmp_path: Path) -> None:
    """Not vacuous: a rule that waits longer than its test expects fails the test."""
    shutil.copy(RULE_TESTS, tmp_path)
    rules = RULES.read_text()
    assert rules.count("for: 5m") == 1
    (tmp_path / RULES.name).write_text(rules.replace("for: 5m", "for: 10m"))
    tested = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0 and "ReconcilerDown" in tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_says_what_to_do() -> None:
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]]
    fired = {check["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for check in test["alert_rule_test"] if check["exp_alerts"]}
    assert {rule["alert"] for rule in rules} == fired
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_rules_cover_suspension_notifications_and_analysis() -> None:
    """What an operator must hear about beyond the passes themselves: a fleet (or a target)
    left suspended, notifications that do not arrive (nobody else will say so), a change
    held by an inconclusive analysis."""
    exprs = "\n".join(rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"]
                      for rule in group["rules"])
    for needed in ("reconciler_fleet_suspended", "reconciler_suspended_targets",
                   "reconciler_notifications_total", "AnalysisInconclusive"):
        assert needed in exprs, needed


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target and every variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"]
               for target in panel.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append((f"${variable['name']}", variable["query"]["query"]))
    return queries


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["gridPos"]["w"] <= 24 and panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
    for title, expr in dashboard_queries():
        used = set(re.findall(r"\$(\w+)", expr))
        assert used <= variables | {"__rate_interval", "__range"}, (title, used)
        if "reconciler_" in expr and not title.startswith("$"):
            assert 'job=~"$job", instance=~"$instance"' in expr, title


def test_the_dashboard_shows_suspension_and_notifications() -> None:
    """A suspended fleet explains a quiet dashboard; undelivered notifications explain a
    quiet chat channel: both are on it."""
    exprs = "\n".join(expr for _, expr in dashboard_queries())
    for needed in ("reconciler_suspended_targets", "reconciler_fleet_suspended",
                   "reconciler_notifications_total"):
        assert needed in exprs, needed


def test_the_rules_job_is_the_one_the_service_monitor_gives() -> None:
    """The Prometheus Operator names a ServiceMonitor's job after the Service (or after the
    Service's label that ``jobLabel`` names): that is the job every rule matches."""
    deploy = REPO_ROOT / "deploy"
    monitor = yaml.safe_load((deploy / "servicemonitor.yaml").read_text())
    service = yaml.safe_load((deploy / "service.yaml").read_text())
    job_label = monitor["spec"].get("jobLabel")
    job = service["metadata"]["labels"][job_label] if job_label \
        else service["metadata"]["name"]
    matchers = set(re.findall(r'job="([^"]*)"', RULES.read_text()))
    assert matchers == {job}, (matchers, job)
