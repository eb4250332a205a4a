"""The daemon's log as an operator reads it: a start line, a line per action and per pass
with what, where, which revision and the result, a stop line; JSON on request; a level
that hides the chatter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler import __version__
from tests.conftest import git
from tests.e2e.daemon import running, wait_until
from tests.fleet import HEALTHY, Fleet

JSON = ("-m", "reconciler", "--log-format", "json")


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_say_what_where_which_revision_and_the_result(
        fleet: Fleet, tmp_path: Path) -> None:
    with running(fleet.settings_file, fleet.state, tmp_path, entry=JSON) as daemon:
        daemon.wait_ready()
        wait_until(lambda: "pass converged" in daemon.log(), what="convergence")
        address = daemon.address
        assert daemon.stop() == 0
    lines = _lines(daemon.log())  # every line parses
    start = next(line for line in lines if line["message"].startswith("reconciler "))
    stop = lines[-1]
    assert start["level"] == "info" and start["message"].startswith(
        f"reconciler {__version__} starting")
    assert (start["version"], start["repository"], start["listen"]) == (
        __version__, str(fleet.repo), address)
    assert stop["message"].startswith("reconciler stopped")
    revision = f"main@sha1:{git(fleet.repo, 'rev-parse', 'HEAD')}"
    applied = {(line["target"], line["kind"], line["name"]): line for line in lines
               if line.get("result") == "applied"}
    assert set(applied) == {("edge", "Strategy", "app"), ("edge", "Model", "policy")}
    for line in applied.values():
        assert line["revision"] == revision and line["level"] == "info"
        assert line["message"].startswith(f"applied {line['op']} {line['kind']}/")
    passes = [line for line in lines if line["message"].startswith("pass ")]
    assert [p["result"] for p in passes][:2] == ["changed", "converged"]
    assert all(p["revision"] == revision and p["duration_seconds"] >= 0 for p in passes)
    assert not [line for line in lines if line.get("result") == "in-sync"], "debug only"
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY


def test_log_level_warning_hides_the_info_lines_and_shows_the_failures(
        fleet: Fleet, tmp_path: Path) -> None:
    entry = (*JSON, "--log-level", "warning")
    with running(fleet.settings_file, fleet.state, tmp_path, entry=entry) as daemon:
        daemon.wait_ready()
        wait_until(lambda: (fleet.root / "app" / "app.py").exists(), what="convergence")
        fleet.strategy("BROKEN = 'fails its health check'\n")
        fleet.commit("a change that fails its health check")
        wait_until(lambda: "rolled-back" in daemon.log(), what="the rollback logged")
        assert daemon.stop() == 0
    lines = _lines(daemon.log())
    assert lines and all(line["level"] in ("warning", "error") for line in lines), lines
    rolled = next(line for line in lines if line.get("result") == "rolled-back")
    assert rolled["level"] == "error" and (rolled["kind"], rolled["name"]) == ("Strategy", "app")
    assert any(line["message"].startswith("pass failed") for line in lines)
