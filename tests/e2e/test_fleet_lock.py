"""Issue 12, defect 10: one reconciler acts on a fleet. The lock was a file in the fleet
root: ``rm`` it, or deliver a file over it through a root of ``"."``, and a second
``apply`` or daemon acted beside the first. Now it is a flock on the fleet root folder
itself, keyed to the fleet whatever the state dir, and re-checked by inode before every
pass. Daemons and commands run as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import GIT_ENV, git
from tests.e2e.daemon import DaemonProcess, wait_until
from tests.fleet import Fleet

PLANTED = """apiVersion: reconciler/v1
kind: Target
metadata: {name: top}
spec:
  local: {root: "."}
---
apiVersion: reconciler/v1
kind: Config
metadata: {name: planted}
spec:
  targets: [top]
  format: json
  data: {pid: 1, purpose: "a file the repository delivers where the lock used to be"}
  deliver: {path: .reconciler.lock}
"""


def _reconciler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, **GIT_ENV})


def test_a_removed_or_delivered_lock_file_never_lets_a_second_reconciler_act(
        tmp_path: Path) -> None:
    repo, state, fleet_root = tmp_path / "repo", tmp_path / "state", tmp_path / "fleet"
    (repo / "desired-state").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "desired-state" / "fleet.yaml").write_text(PLANTED)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a root of '.' and a file named like the old lock")
    settings = tmp_path / "reconciler.yaml"
    settings.write_text(f"repo: {repo}\nstateDir: {state}\nfleetRoot: {fleet_root}\n"
                        "listen: ''\n")
    daemon = DaemonProcess(settings, state, tmp_path)
    try:
        daemon.wait_ready()
        planted = fleet_root / ".reconciler.lock"
        wait_until(lambda: planted.is_file() and b"repository" in planted.read_bytes(),
                   what="the delivered file")
        planted.unlink()  # rm .reconciler.lock, as a person or a workload might
        applying = _reconciler("apply", "--config", str(settings))
        assert applying.returncode == 1, applying.stdout + applying.stderr
        assert "FleetLocked" in applying.stderr
        assert f"(pid {daemon.process.pid}: " in applying.stderr
        second = _reconciler("run", "--config", str(settings))
        assert second.returncode == 1 and "FleetLocked" in second.stderr
        assert daemon.process.poll() is None, "the first daemon still runs"
    finally:
        assert daemon.stop() == 0


def test_two_state_dirs_on_one_fleet_root_conflict(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(f"repo: {fleet.repo}\nstateDir: {tmp_path / 'state-two'}\n"
                     f"fleetRoot: {fleet.state / 'fleet'}\nlisten: ''\n")
    daemon = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
    try:
        daemon.wait_ready()
        applying = _reconciler("apply", "--config", str(other))
        assert applying.returncode == 1 and "FleetLocked" in applying.stderr, applying.stderr
        assert not (tmp_path / "state-two" / "journal.db").exists(), "it did not even start"
    finally:
        assert daemon.stop() == 0
    applied = _reconciler("apply", "--config", str(other))
    assert applied.returncode == 0, "with the daemon gone the fleet is free: " + \
        applied.stdout + applied.stderr


def test_a_fleet_root_moved_away_stops_the_daemon_before_it_acts(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    daemon = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
    try:
        daemon.wait_ready()
        assert (fleet.root / "app" / "app.py").is_file()
        fleet_root = fleet.state / "fleet"
        os.rename(fleet_root, fleet.state / "fleet.old")  # the locked folder, moved away
        fleet_root.mkdir()  # and a new one in its place, which another daemon could lock
        fleet.strategy("OK = 'v2'\n")
        fleet.commit("v2: wakes the daemon")
        wait_until(lambda: daemon.process.poll() is not None, what="the daemon to stop")
        assert daemon.process.returncode == 1
        log = daemon.log()
        assert "FleetLockLost" in log and "no longer the folder" in log, log
        assert list(fleet_root.iterdir()) == [], "nothing delivered into the new folder"
    finally:
        if daemon.process.poll() is None:
            daemon.stop()
        else:
            daemon.notify.close()
    applied = _reconciler("apply", "--config", str(fleet.settings_file))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (fleet.root / "app" / "app.py").read_text() == "OK = 'v2'\n"
