"""Every query of deploy/monitoring/dashboard.json, run by a real Prometheus (Debian's) that
scrapes a running daemon and loads the alert rules: each one is valid PromQL, and each panel
that should show something does."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import SECRET
from tests.e2e.daemon import DaemonProcess, wait_until
from tests.fleet import Fleet
from tests.unit.test_monitoring import RULES, dashboard_queries

# Panels that are empty on a healthy fleet: every object Ready, no alert firing.
EMPTY_WHEN_HEALTHY = {"Objects not ready", "Alerts firing"}
SCRAPE = "1s"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query (errors included, never raised)."""
        data = urllib.parse.urlencode({"query": expr}).encode()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data,
                                        timeout=10) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = error.read(1 << 16)
            try:  # a query error is JSON; a server still starting answers 503 in text
                answer = json.loads(body)
            except ValueError:
                answer = {"status": "error", "error": body.decode(errors="replace")}
        return answer

    def has_data(self, expr: str) -> bool:
        try:
            answer = self.query(expr)
        except OSError:  # not listening yet
            return False
        return answer.get("status") == "success" and bool(answer["data"]["result"])


@contextlib.contextmanager
def prometheus(scrape: str, tmp_path: Path) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus is missing: scripts/test.sh installs Debian's prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "reconciler",
                            "static_configs": [{"targets": [scrape]}]}]}))
    port = _free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: process.poll() is not None or server.has_data(
            'up{job="reconciler"} == 1'), 60, what="Prometheus to scrape the daemon")
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _runnable(expr: str, instance: str) -> str:
    """What Grafana sends for a query: its variables filled in, ``label_values`` as the
    PromQL behind it."""
    expr = (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            .replace("$job", "reconciler").replace("$instance", instance))
    variable = re.fullmatch(r"label_values\((.+), (\w+)\)", expr)
    if variable:
        expr = f"group by ({variable.group(2)}) ({variable.group(1)})"
    assert "$" not in expr, expr
    return expr


def _webhook(daemon: DaemonProcess) -> None:
    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://{daemon.address}/webhook", data=body,
                                     headers={"X-Hub-Signature-256": signature})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def test_every_dashboard_query_runs_against_prometheus_scraping_the_daemon(
        fleet: Fleet, daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.wait_ready()
    wait_until(lambda: (fleet.journal().last_pass() or {}).get("result") == "converged",
               what="convergence")
    with prometheus(daemon.address, tmp_path) as server:
        # A pass while Prometheus watches: rates and quantiles have something to show.
        wait_until(lambda: server.has_data('count_over_time(up{job="reconciler"}[1m]) >= 2'),
                   what="two scrapes")
        _webhook(daemon)
        wait_until(lambda: server.has_data(
            'increase(reconciler_reconcile_duration_seconds_count{job="reconciler"}[1m]) > 0'),
            what="a pass seen by Prometheus")
        queries = dashboard_queries()
        assert len(queries) >= 15
        for title, expr in queries:
            answer = server.query(_runnable(expr, daemon.address))
            assert answer.get("status") == "success", (title, expr, answer)
            result = answer["data"]["result"]
            if title in EMPTY_WHEN_HEALTHY:
                assert result == [], (title, result)
                continue
            assert result, f"{title}: {expr} returned no data"
            values = [float(sample["value"][1]) for sample in result]
            assert all(math.isfinite(value) for value in values), (title, result)
        revision = server.query('reconciler_last_applied_revision_info{job="reconciler"}')
        assert [r["metric"]["revision"] for r in revision["data"]["result"]] == [
            fleet.journal().last_pass()["revision"]]  # type: ignore[index]
        ready = server.query('sum by (condition) (reconciler_object_condition)')
        assert {r["metric"]["condition"]: float(r["value"][1])
                for r in ready["data"]["result"]} == {"Ready": 2, "Reconciling": 0,
                                                      "Stalled": 0}
