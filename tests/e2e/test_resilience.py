"""No exception ends the daemon: a defect in a step or a refusing journal becomes a status
that names it, the probes keep answering, and the next commit converges. The daemon runs
as a subprocess with defects planted by tests/e2e/planted_defect.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Result
from tests.e2e.daemon import DaemonProcess, wait_until
from tests.e2e.test_daemon import get
from tests.fleet import Fleet

PLANTED = str(Path(__file__).with_name("planted_defect.py"))


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    made = Fleet(tmp_path)
    made.settings_file.write_text(f"repo: {made.repo}\nstateDir: {made.state}\n"
                                  "listen: 127.0.0.1:0\nresync: 1s\n")
    return made


@pytest.fixture
def daemon(fleet: Fleet, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(fleet.settings_file, fleet.state, tmp_path, entry=(PLANTED,))
    yield process
    if process.process.poll() is None:
        process.stop()


def _status(cli: Callable[..., Result], fleet: Fleet) -> dict[str, dict[str, str]]:
    done = cli("status", "--config", str(fleet.settings_file), "--output", "json")
    assert done.returncode == 0, done.stderr
    return {f"{o['kind']}/{o['name']}": o for o in json.loads(done.stdout)["objects"]}


def test_a_step_raising_an_unexpected_exception_stalls_the_object_not_the_daemon(
        fleet: Fleet, daemon: DaemonProcess, cli: Callable[..., Result]) -> None:
    daemon.wait_ready()
    fleet.strategy("EXPLODE = 1\n")
    fleet.commit("content that trips a defect")
    wait_until(lambda: _status(cli, fleet)["Strategy/app"]["reason"] == "UnexpectedError",
               what="the object stalled on the defect")
    row = _status(cli, fleet)["Strategy/app"]
    assert row["status"] == "Stalled"
    assert "ZeroDivisionError: planted defect" in row["message"]
    assert get(daemon, "/healthz")[0] == 200 and get(daemon, "/readyz")[0] == 200
    assert daemon.process.poll() is None
    fleet.strategy("OK = 'fixed'\n")
    fleet.commit("the next commit")
    wait_until(lambda: (fleet.root / "app" / "app.py").read_text() == "OK = 'fixed'\n"
               and _status(cli, fleet)["Strategy/app"]["status"] == "Ready",
               what="convergence after the defect")


def test_a_journal_that_refuses_is_a_transient_fault_and_the_daemon_goes_on(
        fleet: Fleet, daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    (fleet.state / "PLANTED_FULL_DISK").touch()
    fleet.strategy("OK = 'v2'\n")
    fleet.commit("a change while the disk is full")
    daemon.wait_for_message("STATUS=", 30)
    wait_until(lambda: "JournalUnavailable" in daemon.log(), what="the refusal logged")
    assert "database or disk is full" in daemon.log()
    wait_until(lambda: (fleet.root / "app" / "app.py").read_text() == "OK = 'v2'\n",
               what="convergence once the journal answers again")
    _, text = get(daemon, "/metrics")
    passes = {s.labels["result"]: s.value for f in text_string_to_metric_families(text)
              if f.name == "reconciler_reconcile" for s in f.samples
              if s.name == "reconciler_reconcile_total"}
    assert passes["transient"] >= 1


def test_a_hand_flipped_pointer_is_put_back_and_counted_as_drift(
        fleet: Fleet, daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    pointer = fleet.root / "models" / "current.bin"
    wait_until(lambda: pointer.is_symlink(), what="the first flip")
    declared = os.readlink(pointer)
    stray = fleet.root / "models" / "hand-copied.bin"
    stray.write_bytes(b"never gated")
    hand = fleet.root / "models" / ".hand"
    os.symlink(stray, hand)
    os.replace(hand, pointer)
    wait_until(lambda: os.readlink(pointer) == declared, what="the pointer put back")

    def drift(kind: str) -> float:
        _, text = get(daemon, "/metrics")
        return next(s.value for f in text_string_to_metric_families(text)
                    if f.name == "reconciler_drift_corrections" for s in f.samples
                    if s.name.endswith("_total") and s.labels["kind"] == kind)

    wait_until(lambda: drift("Model") == 1.0, what="the repair counted")
    assert drift("Strategy") == 0.0


def test_the_daemon_says_on_stop_that_the_fleets_services_keep_running(
        fleet: Fleet, daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    assert daemon.stop() == 0
    assert "The fleet's services keep running" in daemon.log()
