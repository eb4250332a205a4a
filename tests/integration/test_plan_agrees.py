"""``plan`` says what the daemon's next pass does: it plans from the same journal history
(soaks, failure marks, canonical-before digests, budgets), read-only. Each case runs
``reconciler plan --output json`` as a subprocess against a state dir that real passes
made, then lets the pass run and compares."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.journal import Journal
from tests.conftest import Result
from tests.fleet import Fleet


def plan_json(cli: Callable[..., Result], fleet: Fleet) -> dict[tuple[str, str], Any]:
    done = cli("plan", "--config", str(fleet.settings_file), "--output", "json")
    assert done.returncode in (0, 2), done.stderr
    actions = json.loads(done.stdout)["actions"]
    return {(a["target"], f"{a['kind']}/{a['name']}"): a for a in actions}


def test_during_a_soak_plan_and_the_daemon_agree_on_the_reason_and_the_time(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.write("targets.yaml", "apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: edge}"
                "\nspec:\n  local: {root: edge}\n---\napiVersion: reconciler/v1\nkind: Target\n"
                "metadata: {name: prod}\nspec:\n  local: {root: prod}\n  after: edge\n"
                "  soak: 1h\n")
    fleet.strategy("OK = 'v1'\n", extra="")
    (fleet.repo / "desired-state" / "app.yaml").write_text(
        (fleet.repo / "desired-state" / "app.yaml").read_text().replace(
            "targets: [edge]", "targets: [edge, prod]"))
    fleet.commit("two targets")
    fleet.apply()
    outcome = fleet.apply()
    assert fleet.results(outcome)["Strategy/app"] in ("in-sync", "waiting")
    journal = Journal(fleet.settings().journal_path)
    healthy = journal.object(("edge", "Strategy", "app"))["healthy_since"]  # type: ignore[index]
    daemon_says = journal.object(("prod", "Strategy", "app"))
    journal.close()
    planned = plan_json(cli, fleet)[("prod", "Strategy/app")]
    assert (planned["status"], planned["reason"]) == ("waiting", "Soaking")
    assert planned["notBefore"] == healthy + 3600
    assert daemon_says is not None and daemon_says["reason"] == "Soaking"


def test_rolled_back_content_is_blocked_in_plan_as_in_the_pass(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.apply()
    fleet.strategy("BROKEN = 1\n")
    fleet.commit("a change that fails its health check")
    assert fleet.results(fleet.apply())["Strategy/app"] == "rolled-back"
    planned = plan_json(cli, fleet)[("edge", "Strategy/app")]
    assert (planned["status"], planned["reason"]) == ("blocked", "FailedBefore")
    assert fleet.results(fleet.apply())["Strategy/app"] == "blocked", "not retried"


def test_a_digest_canonical_before_skips_the_gate_in_plan_as_in_the_pass(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.apply()
    fleet.model(b"weights-v2")
    fleet.commit("v2")
    fleet.apply()
    fleet.model(b"weights-v1")
    fleet.commit("back to v1")
    planned = plan_json(cli, fleet)[("edge", "Model/policy")]
    assert planned["steps"][:2] == ["verify sha256", "gate skipped: canonical before"]
    assert fleet.results(fleet.apply())["Model/policy"] == "applied"
    journal = Journal(fleet.settings().journal_path)
    flips = [e for e in journal.events(action="flip") if e.phase == "intent"]
    journal.close()
    assert flips[-1].detail["gateSkipped"] is True


def test_plan_shows_budget_exhausted_exactly_where_apply_refuses(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.write("budget.yaml", "apiVersion: reconciler/v1\nkind: Budget\nmetadata: {name: b}\n"
                "spec: {restartsPerHour: 2}\n")
    fleet.commit("a tight budget")
    assert fleet.apply().result == "changed"  # two restarts: the budget is spent
    fleet.strategy("OK = 'v2'\n")
    fleet.commit("v2")
    text = cli("plan", "--config", str(fleet.settings_file))
    assert text.returncode == 2
    assert "blocked (BudgetExhausted): restart budget exhausted: 2 of 2 restarts" in text.stdout
    planned = plan_json(cli, fleet)[("edge", "Strategy/app")]
    assert (planned["status"], planned["reason"]) == ("blocked", "BudgetExhausted")
    applied = cli("apply", "--config", str(fleet.settings_file))
    assert applied.returncode == 1
    assert "blocked  edge  Strategy/app: restart budget exhausted: 2 of 2" in applied.stdout


def test_plan_reads_the_journal_without_writing_it(tmp_path: Path,
                                                   cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.apply()
    journal = fleet.settings().journal_path
    before = journal.stat().st_mtime_ns, journal.read_bytes()
    assert cli("plan", "--config", str(fleet.settings_file)).returncode == 0
    assert (journal.stat().st_mtime_ns, journal.read_bytes()) == before
