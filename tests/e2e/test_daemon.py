"""``reconciler run`` as a subprocess against real git repositories."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.journal import Journal
from tests.conftest import git
from tests.e2e.conftest import SECRET
from tests.e2e.daemon import DaemonProcess, wait_until
from tests.fleet import HEALTHY, Fleet, sha


def fleet_state(root: Path) -> dict[str, str]:
    """What the fleet holds: file digests and pointer targets (restart counters aside)."""
    state = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative in ("restarts", ".reconciler.lock"):
            continue
        if path.is_symlink():
            state[relative] = "-> " + os.readlink(path)
        elif path.is_file():
            state[relative] = sha(path.read_bytes())
    return state




def converged_to(fleet: Fleet, content: str, artifact: bytes) -> bool:
    try:
        return ((fleet.root / "app" / "app.py").read_text() == content
                and (fleet.root / "models" / "current.bin").read_bytes() == artifact)
    except OSError:
        return False


def test_commit_converges_and_revert_restores_byte_for_byte(fleet: Fleet,
                                                             daemon: DaemonProcess) -> None:
    ready = daemon.wait_ready()
    assert "changed" in ready or "converged" in ready
    wait_until(lambda: converged_to(fleet, HEALTHY, b"weights-v1"), what="first convergence")
    before = fleet_state(fleet.root)

    fleet.strategy("OK = 'second commit'\n")
    fleet.model(b"weights-v2")
    fleet.commit("second commit")
    took = wait_until(lambda: converged_to(fleet, "OK = 'second commit'\n", b"weights-v2"),
                      what="the second commit")
    assert took < 10

    git(fleet.repo, "revert", "--no-edit", "HEAD")
    wait_until(lambda: converged_to(fleet, HEALTHY, b"weights-v1"), what="the revert")
    assert fleet_state(fleet.root) == before
    flips = [e for e in fleet.journal().events("policy") if e.action == "flip"
             and e.phase == "intent"]
    assert flips[-1].detail["gateSkipped"] is True, "v1 was canonical before"
    assert daemon.stop() == 0
    assert any(m.startswith("STOPPING=1") for m in daemon.messages)
    assert any(m == "WATCHDOG=1" for m in daemon.messages)


def test_failing_change_rolls_back_once_and_the_fix_converges(
        fleet: Fleet, daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    wait_until(lambda: converged_to(fleet, HEALTHY, b"weights-v1"), what="convergence")
    fleet.strategy("BROKEN = 'fails its health check'\n")
    bad = fleet.commit("bad strategy")
    journal = fleet.journal()

    def state() -> dict[str, object]:
        return journal.object(("edge", "Strategy", "app")) or {}

    wait_until(lambda: state().get("failed_revision") == f"main@sha1:{bad}", what="rollback")
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY
    for _ in range(3):  # more passes: the failed revision must not be retried
        post_webhook(daemon, b"{}")
        time.sleep(0.3)
    attempts = [e for e in journal.events("app") if e.action == "deliver"
                and e.phase == "intent" and e.revision == f"main@sha1:{bad}"]
    assert len(attempts) == 1

    status = subprocess.run([sys.executable, "-m", "reconciler", "status", "--config",
                             str(fleet.settings_file)], capture_output=True, text=True,
                            check=True).stdout
    line = next(x for x in status.splitlines() if x.startswith("edge") and " app " in x)
    assert "Stalled" in line and "FailedBefore" in line and "health check failed" in line

    fleet.strategy("OK = 'fixed'\n")
    fleet.commit("fix")
    wait_until(lambda: converged_to(fleet, "OK = 'fixed'\n", b"weights-v1"), what="the fix")
    wait_until(lambda: state().get("status") == "Ready", what="Ready again")


def post_webhook(daemon: DaemonProcess, body: bytes, signature: str | None = None) -> int:
    if signature is None:
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://{daemon.address}/webhook", data=body,
                                     headers={"X-Hub-Signature-256": signature,
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def announce_huge_body(daemon: DaemonProcess) -> int:
    """Headers announcing a 10 MB body, then wait for the answer without sending it."""
    host, port = daemon.address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/webhook")
    connection.putheader("Content-Length", str(10 << 20))
    connection.putheader("X-Hub-Signature-256", "sha256=" + "0" * 64)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def get(daemon: DaemonProcess, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{daemon.address}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_probes_and_webhook(fleet: Fleet, daemon: DaemonProcess,
                                    tmp_path: Path) -> None:
    daemon.wait_ready()
    wait_until(lambda: converged_to(fleet, HEALTHY, b"weights-v1"), what="convergence")
    assert get(daemon, "/healthz")[0] == 200
    assert get(daemon, "/readyz") == (200, "first pass done\n")
    assert get(daemon, "/nothing")[0] == 404

    events_before = len(fleet.journal().events(limit=10_000))
    assert post_webhook(daemon, b'{"ref": "refs/heads/main"}', "sha256=" + "0" * 64) == 401
    assert post_webhook(daemon, b"{}", "") == 401
    assert announce_huge_body(daemon) == 413, "refused before a byte of the body is read"
    time.sleep(0.5)
    assert len(fleet.journal().events(limit=10_000)) == events_before, "nothing triggered"
    last = fleet.journal().last_pass()
    assert post_webhook(daemon, b'{"ref": "refs/heads/main"}') == 202
    wait_until(lambda: (fleet.journal().last_pass() or {}).get("id") != (last or {}).get("id"),
               what="a pass after the webhook")

    status, text = get(daemon, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["reconciler_reconcile"].type == "counter"
    passes = {s.labels["result"]: s.value for s in families["reconciler_reconcile"].samples
              if s.name == "reconciler_reconcile_total"}
    assert passes["changed"] >= 1 and passes["converged"] >= 1
    durations = [s for s in families["reconciler_reconcile_duration_seconds"].samples
                 if s.name.endswith("_count")]
    assert durations[0].value == sum(passes.values())
    info = families["reconciler_last_applied_revision_info"].samples
    head = git(fleet.repo, "rev-parse", "HEAD")
    assert info[0].labels["revision"] == f"main@sha1:{head}"
    assert families["reconciler_last_success_timestamp_seconds"].samples[0].value > 0
    assert {s.labels["reason"] for s in families["reconciler_pending_actions"].samples} >= {
        "Soaking", "OutsideWindow", "FailedBefore"}
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/test.sh installs Debian's prometheus")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_stop_during_a_health_soak_undoes_without_marking_the_revision(
        fleet: Fleet, daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    wait_until(lambda: converged_to(fleet, HEALTHY, b"weights-v1"), what="convergence")
    fleet.strategy("OK = 'slow to prove itself'\n",
                   health="command: [python3, -c, 'pass'], soak: 30s")
    head = fleet.commit("a change with a long soak")
    wait_until(lambda: (fleet.root / "app" / "app.py").read_text()
               == "OK = 'slow to prove itself'\n", what="delivery")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 10
    assert (fleet.root / "app" / "app.py").read_text() == HEALTHY, "undone on the way out"
    journal = fleet.journal()
    state = journal.object(("edge", "Strategy", "app")) or {}
    assert state["reason"] == "Interrupted"
    assert state["failed_revision"] != f"main@sha1:{head}"
    assert "its health check was skipped: the daemon is stopping" in state["message"]
    assert "not healthy either" not in state["message"]
    undo = [e.phase for e in journal.events(action="rollback")]
    assert undo == ["intent", "done"], "the undo did not fail: its check was skipped"


def test_reload_takes_valid_settings_and_refuses_broken_ones(fleet: Fleet,
                                                             daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    text = fleet.settings_file.read_text()
    fleet.settings_file.write_text(text.replace("resync: 1h", "resync: 30m"))
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "settings reloaded" in daemon.log(), what="reload")
    fleet.settings_file.write_text(text + "resinc: 5m\n")
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in daemon.log(), what="refused reload")
    assert "unknown field 'resinc'" in daemon.log()
    assert get(daemon, "/healthz")[0] == 200, "still running on the old settings"


def test_a_second_daemon_on_the_same_fleet_refuses_and_says_why(
        fleet: Fleet, daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.wait_ready()
    second = subprocess.run([sys.executable, "-m", "reconciler", "run", "--config",
                             str(fleet.settings_file)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert second.returncode == 1
    assert "FleetLocked" in second.stderr
    assert f"(pid {daemon.process.pid}: " in second.stderr, "the holder, from /proc/locks"
    assert "reconciler run --config" in second.stderr
    applying = subprocess.run([sys.executable, "-m", "reconciler", "apply", "--config",
                               str(fleet.settings_file)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert applying.returncode == 1 and "FleetLocked" in applying.stderr


def test_unreachable_remote_backs_off_and_recovers(fleet: Fleet, tmp_path: Path) -> None:
    moved = tmp_path / "repo-away"
    fleet.settings_file.write_text(f"repo: file://{fleet.repo}\nstateDir: {fleet.state}\n"
                                   "listen: ''\ninterval: 1s\n")
    shutil.move(fleet.repo, moved)
    process = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
    try:
        ready = process.wait_ready()
        assert "transient: SourceUnavailable" in ready and "retrying in" in ready
        status = subprocess.run([sys.executable, "-m", "reconciler", "status", "--config",
                                 str(fleet.settings_file)], capture_output=True, text=True,
                                check=True).stdout
        assert "transient" in status and "SourceUnavailable" in status
        shutil.move(moved, fleet.repo)
        wait_until(lambda: converged_to(fleet, HEALTHY, b"weights-v1"), timeout=40,
                   what="recovery after the remote came back")
    finally:
        process.stop()


def test_missing_branch_stalls_and_the_daemon_keeps_running(fleet: Fleet,
                                                            tmp_path: Path) -> None:
    fleet.settings_file.write_text(f"repo: {fleet.repo}\nbranch: release\nstateDir: "
                                   f"{fleet.state}\nlisten: ''\n")
    process = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
    try:
        ready = process.wait_ready()
        assert "stalled: RevisionNotFound: branch 'release' does not exist" in ready
        git(fleet.repo, "branch", "release")
        wait_until(lambda: converged_to(fleet, HEALTHY, b"weights-v1"),
                   what="convergence once the branch exists")
    finally:
        process.stop()


def test_unreadable_settings_fail_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "reconciler.yaml"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-m", "reconciler", "run", "--config",
                             str(folder)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 1
    assert "cannot read settings" in result.stderr


@pytest.mark.parametrize("rounds", [
    pytest.param(3, id="3-rounds"),
    pytest.param(int(os.environ.get("RECONCILER_KILL9_ROUNDS", "50")), id="many-rounds",
                 marks=pytest.mark.slow)])
def test_kill_9_at_random_moments_always_converges(fleet: Fleet, tmp_path: Path,
                                                   rounds: int) -> None:
    rng = random.Random(20261122)
    versions = [("OK = 'v1'\n", b"weights-a"), ("OK = 'v2'\n", b"weights-b")]
    fleet.settings_file.write_text(f"repo: {fleet.repo}\nstateDir: {fleet.state}\n"
                                   "listen: ''\n")
    for round_number in range(rounds):
        content, artifact = versions[round_number % 2]
        # What is tested is convergence after kill -9, not how fast a command runs: on a
        # loaded CI machine a 10 s restart timeout once rolled a round back.
        fleet.strategy(content, restart_timeout="60s", health_timeout="30s")
        fleet.model(artifact, health_timeout="30s")
        fleet.commit(f"round {round_number}")
        victim = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
        time.sleep(rng.uniform(0.3, 1.2))  # startup is ~0.4 s: most kills land mid-pass
        victim.kill9()
        pointer = fleet.root / "models" / "current.bin"
        if pointer.is_symlink():
            assert pointer.exists(), f"round {round_number}: dangling pointer"
        journal = Journal(fleet.settings().journal_path)
        assert journal.integrity_ok()
        journal.close()
        survivor = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
        try:
            survivor.wait_ready()
            try:
                wait_until(lambda c=content, a=artifact: converged_to(fleet, c, a),  # type: ignore[misc]
                           timeout=30, what=f"convergence in round {round_number}")
            except AssertionError as error:
                raise AssertionError(f"{error}; the daemon said:\n{survivor.log()[-4000:]}") \
                    from None
        finally:
            assert survivor.stop() == 0
    interrupted = [e for e in fleet.journal().events(limit=100_000)
                   if e.phase == "interrupted"]
    assert rounds < 5 or interrupted, "some kills should have landed during a pass"


def test_a_storm_of_signals_never_deadlocks_the_daemon(fleet: Fleet,
                                                      daemon: DaemonProcess) -> None:
    """A Python signal handler that sets an event can land while the main thread holds
    that event's lock (inside ``wait``) and hang the daemon for good, deaf to SIGTERM
    (daemon/signals.py). Hundreds of reloads in a burst make that window likely."""
    daemon.wait_ready()
    for _ in range(800):
        daemon.process.send_signal(signal.SIGHUP)
        time.sleep(0.002)
    wait_until(lambda: daemon.log().count("settings reloaded") >= 1, what="a reload")
    assert get(daemon, "/healthz")[0] == 200
    daemon.process.send_signal(signal.SIGTERM)
    daemon.process.wait(timeout=30)
    assert daemon.process.returncode == 0, daemon.log()
