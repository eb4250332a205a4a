"""Stop the line, reconcile now, a newer revision supersedes: the CLI against a running
daemon subprocess, through its control socket, on a real repository."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import GIT_ENV
from tests.e2e.daemon import DaemonProcess, running, wait_until
from tests.fleet import HEALTHY, Fleet, sha

SOAK = "command: [python3, -c, 'pass'], soak: 60s"  # longer than any wait below


def cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args, "--config",
                           str(fleet.settings_file)], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, **GIT_ENV})


def app(fleet: Fleet) -> str:
    try:
        return (fleet.root / "app" / "app.py").read_text()
    except OSError:
        return ""


def state(fleet: Fleet) -> dict[str, object]:
    journal = fleet.journal()
    try:
        return journal.object(("edge", "Strategy", "app")) or {}
    finally:
        journal.close()


def events(fleet: Fleet, action: str) -> list[str]:
    journal = fleet.journal()
    try:
        return [event.phase for event in journal.events(action=action)]
    finally:
        journal.close()


def metric(daemon: DaemonProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://{daemon.address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith(name + " ")))


@pytest.fixture
def ready(fleet: Fleet, daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    daemon.wait_ready()
    wait_until(lambda: app(fleet) == HEALTHY, what="first convergence")
    yield daemon


def test_suspended_drift_is_reported_not_repaired_and_resume_repairs_it(
        fleet: Fleet, ready: DaemonProcess) -> None:
    done = cli(fleet, "suspend", "edge", "--reason", "GPU driver upgrade, INC-4711")
    assert done.returncode == 0, done.stderr
    assert "took it up" in done.stdout
    me = pwd.getpwuid(os.getuid()).pw_name
    assert f"suspended edge by {me}: GPU driver upgrade, INC-4711" in done.stdout

    (fleet.root / "app" / "app.py").write_text("OK = 'edited by hand'\n")
    asked = cli(fleet, "reconcile", "--wait", "--timeout", "60s", "-o", "json")
    assert asked.returncode == 0, asked.stdout + asked.stderr  # waiting is not a failure
    answer = json.loads(asked.stdout)
    assert answer["pass"]["result"] == "waiting" and "waiting" in answer["pass"]["message"]
    assert answer["daemon"] == {"running": True, "tookUp": True, "pid": ready.process.pid,
                                "error": None}
    assert "waiting" in asked.stderr  # what a person reads, off the document's stream
    assert app(fleet) == "OK = 'edited by hand'\n", "nothing is changed on a suspended target"
    seen = state(fleet)
    assert seen["reason"] == "Suspended"
    assert "drift on file app/app.py is not repaired" in str(seen["message"])
    assert "INC-4711" in str(seen["message"])

    shown = cli(fleet, "status", "--output", "json")
    suspended = json.loads(shown.stdout)["suspended"]
    assert [(s["target"], s["who"], s["reason"]) for s in suspended] == [
        ("edge", me, "GPU driver upgrade, INC-4711")]
    assert "SUSPENDED  edge is suspended by" in cli(fleet, "status").stdout
    planned = cli(fleet, "plan", "--output", "json")
    assert planned.returncode == 2, "the plan still shows the drift"
    assert metric(ready, "reconciler_suspended_targets") == 1
    assert "suspend: edge is suspended" in ready.log()

    resumed = cli(fleet, "resume", "edge")
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: app(fleet) == HEALTHY, what="the drift repaired after resume")
    assert metric(ready, "reconciler_suspended_targets") == 0
    journal = fleet.journal()
    try:
        said = [(e.action, e.detail.get("who")) for e in journal.events("edge")
                if e.action in ("suspend", "resume")]
    finally:
        journal.close()
    assert said == [("suspend", me), ("resume", me)]


def test_a_suspension_ends_a_soak_under_way_and_leaves_the_content_in_place(
        fleet: Fleet, ready: DaemonProcess) -> None:
    fleet.strategy("OK = 'soaking'\n", health=SOAK)
    head = fleet.commit("a change with a 60 s soak")
    wait_until(lambda: app(fleet) == "OK = 'soaking'\n", what="delivery")
    wait_until(lambda: events(fleet, "health")[-1:] == ["intent"], what="the soak")

    done = cli(fleet, "suspend", "--all", "--reason", "stop the line")
    assert done.returncode == 0, done.stderr
    # Before the 60 s soak could have ended: the suspension ended it.
    wait_until(lambda: state(fleet).get("reason") == "Suspended", timeout=40,
               what="the soak ended by the suspension")
    seen = state(fleet)
    assert app(fleet) == "OK = 'soaking'\n", "left as it is, not rolled back"
    assert seen["failed_revision"] != f"main@sha1:{head}", "not marked failed"
    # The executor says so as the soak ends, the next pass's plan as it waits: both name it.
    assert "file app/app.py is" in str(seen["message"])
    assert "unverified" in str(seen["message"])
    journal = fleet.journal()
    try:
        ended = [e.detail for e in journal.events(action="health") if e.phase == "interrupted"]
    finally:
        journal.close()
    assert "the whole fleet is suspended" in ended[-1]["detail"]
    assert events(fleet, "health")[-1] == "interrupted"
    assert events(fleet, "rollback") == []
    assert metric(ready, "reconciler_fleet_suspended") == 1


def test_a_newer_commit_supersedes_a_soak_and_is_applied_at_once(
        fleet: Fleet, ready: DaemonProcess) -> None:
    fleet.strategy("OK = 'first'\n", health=SOAK)
    first = fleet.commit("a change with a 60 s soak")
    wait_until(lambda: events(fleet, "health")[-1:] == ["intent"]
               and app(fleet) == "OK = 'first'\n", what="the first change soaking")

    fleet.strategy("OK = 'second'\n")
    fleet.commit("a newer change")
    # Long before the 60 s soak would have ended: the newer revision is applied and healthy.
    wait_until(lambda: state(fleet).get("applied_digest") == sha(b"OK = 'second'\n"),
               timeout=40, what="the newer revision applied")
    assert app(fleet) == "OK = 'second'\n"
    seen = state(fleet)
    assert seen["failed_revision"] != f"main@sha1:{first}", "the superseded one is not failed"
    journal = fleet.journal()
    try:
        superseded = journal.events(action="superseded")
    finally:
        journal.close()
    assert len(superseded) == 1 and superseded[0].detail["digest"] == sha(b"OK = 'first'\n")
    assert "superseded by commit" in superseded[0].detail["why"]
    assert events(fleet, "rollback") == [], "neither undone nor rolled back"
    assert "interrupted" in events(fleet, "health")


def test_without_a_daemon_requests_are_journaled_and_honoured_by_apply(fleet: Fleet) -> None:
    unknown = cli(fleet, "suspend", "edge", "nosuch", "--reason", "x")
    assert unknown.returncode == 1
    assert "unknown target: nosuch (known: edge); nothing was recorded" in unknown.stderr
    if fleet.settings().journal_path.exists():
        journal = fleet.journal()
        try:
            assert journal.suspensions() == {}
            assert journal.events(action="suspend") == []
        finally:
            journal.close()

    done = cli(fleet, "suspend", "edge", "--reason", "maintenance")
    assert done.returncode == 0, done.stderr
    assert "no daemon is running" in done.stdout
    applied = cli(fleet, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert app(fleet) == "", "apply changes nothing on a suspended target"
    assert "Suspended" in cli(fleet, "status").stdout

    waited = cli(fleet, "reconcile", "--wait")
    assert waited.returncode == 1 and "no daemon is running" in waited.stdout
    assert cli(fleet, "reconcile").returncode == 0
    assert cli(fleet, "resume", "--all").returncode == 0
    assert cli(fleet, "apply").returncode == 0
    assert app(fleet) == HEALTHY


def ask_as_nobody(socket_path: Path) -> dict[str, object]:
    """A wake request from a forked child that gave up root for nobody (uid 65534)."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(10)
            client.connect(str(socket_path))
            client.sendall(b'{"op": "wake"}\n')
            os.write(write, client.recv(4096))
        except BaseException as error:
            os.write(write, json.dumps({"child": repr(error)}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        said = answer.read()
    os.waitpid(child, 0)
    reply = json.loads(said)
    assert isinstance(reply, dict)
    return reply


def test_a_caller_with_another_uid_is_refused(fleet: Fleet, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as nobody")
    runtime = Path(tempfile.mkdtemp(prefix="reconciler-run-", dir="/tmp"))
    runtime.chmod(0o755)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))  # as systemd's RuntimeDirectory=
    with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
        daemon.wait_ready()
        socket_path = runtime / "control.sock"
        assert oct(socket_path.stat().st_mode & 0o777) == "0o600"
        socket_path.chmod(0o666)  # loosened by mistake: SO_PEERCRED still refuses
        reply = ask_as_nobody(socket_path)
        assert reply["ok"] is False, reply
        assert "uid 65534 may not control this daemon" in str(reply["error"])
        wait_until(lambda: "refused a request from uid 65534" in daemon.log(),
                   what="the refusal logged")
        # The owner's own request, through daemon.json's path, is served.
        asked = cli(fleet, "reconcile", "--wait", "--timeout", "60s")
        assert asked.returncode == 0, asked.stdout + asked.stderr
    assert not socket_path.exists(), "removed on the way out"
    runtime.rmdir()
