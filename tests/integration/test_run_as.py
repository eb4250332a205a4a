"""Restart and health commands run as the fleet's user, not the daemon's: a minimal
environment without the daemon's secrets, no way into the state dir, the journal or the
daemon's /proc, and the store readable (pointers lead there) but never writable. The
suite runs as root, so it makes the user it needs."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Result
from tests.fleet import Fleet

# Delivered as the strategy and run as the restart command: it reports what it can reach.
PROBE = '''import json, os, sys
state, store = sys.argv[1], sys.argv[2]

def can(action):
    try:
        action()
        return True
    except OSError:
        return False

def write_store():
    with open(os.path.join(store, "sha256", "planted"), "w") as stream:
        stream.write("x")

report = {
    "uid": os.getuid(),
    "env": sorted(os.environ),
    "list_state": can(lambda: os.listdir(state)),
    "read_journal": can(lambda: open(os.path.join(state, "journal.db"), "rb").read(1)),
    "daemon_environ": can(lambda: open(f"/proc/{os.getppid()}/environ", "rb").read(1)),
    "write_store": can(write_store),
}
print("PROBE " + json.dumps(report))
'''


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """pytest's own tmp dirs are 0700 root's: the fleet's user could not even reach the
    target root. A real fleet root is reachable by its user; so is this one."""
    base = Path(tempfile.mkdtemp(prefix="reconciler-run-as-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fleet_user() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("making a user needs root (CI and the dev machines run as root)")
    name = f"rcf-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    yield name
    subprocess.run(["userdel", name], check=False, capture_output=True)


def test_commands_run_as_the_fleets_user_without_the_daemons_secrets_or_state(
        shared_tmp: Path, fleet_user: str, cli: Callable[..., Result]) -> None:
    fleet = Fleet(shared_tmp)
    fleet.write("targets.yaml", "apiVersion: reconciler/v1\nkind: Target\nmetadata: "
                f"{{name: edge}}\nspec:\n  local: {{root: edge, runAs: {fleet_user}}}\n")
    state, store = fleet.state, fleet.state / "store"
    fleet.strategy(PROBE, restart=f"[python3, app/app.py, '{state}', '{store}']",
                   health="command: [python3, -c, 'pass']")
    fleet.commit("a strategy that probes what its commands can reach")
    applied = cli("apply", "--config", str(fleet.settings_file),
                  env={"RECONCILER_PLANTED_SECRET": "hunter2-token"})
    assert applied.returncode == 0, applied.stdout + applied.stderr
    journal = fleet.journal()
    outputs = [e.detail.get("output", "") for e in journal.events(action="restart")
               if e.phase == "done" and e.kind == "Strategy"]
    journal.close()
    report = json.loads(outputs[-1].split("PROBE ", 1)[1])
    assert report["uid"] == pwd.getpwnam(fleet_user).pw_uid
    assert "RECONCILER_PLANTED_SECRET" not in report["env"]
    assert set(report["env"]) <= {"PATH", "LANG", "HOME", "USER", "LOGNAME", "RECONCILER_TARGET",
                                  "RECONCILER_TARGET_ROOT", "RECONCILER_REVISION",
                                  "RECONCILER_OBJECT"}
    assert report["list_state"] is False and report["read_journal"] is False
    assert report["daemon_environ"] is False
    assert report["write_store"] is False
    assert not (store / "sha256" / "planted").exists()


def test_a_model_pointer_stays_readable_by_the_fleets_user(
        shared_tmp: Path, fleet_user: str, cli: Callable[..., Result]) -> None:
    fleet = Fleet(shared_tmp)
    fleet.write("targets.yaml", "apiVersion: reconciler/v1\nkind: Target\nmetadata: "
                f"{{name: edge}}\nspec:\n  local: {{root: edge, runAs: {fleet_user}}}\n")
    fleet.commit("commands as the fleet's user")
    applied = cli("apply", "--config", str(fleet.settings_file))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    # The model's health check (run as the fleet's user) reads through the pointer.
    journal = fleet.journal()
    health = [e for e in journal.events(action="health") if e.kind == "Model"]
    journal.close()
    assert health[-1].phase == "done", health[-1].detail


def test_an_unknown_run_as_user_fails_the_step_and_names_it(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.write("targets.yaml", "apiVersion: reconciler/v1\nkind: Target\nmetadata: "
                "{name: edge}\nspec:\n  local: {root: edge, runAs: no-such-user-here}\n")
    fleet.commit("a user the host does not have")
    applied = cli("apply", "--config", str(fleet.settings_file))
    assert applied.returncode == 1
    assert "no user 'no-such-user-here' on this host" in applied.stdout
