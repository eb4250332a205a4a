"""What an operator hits first on a real host, each through the command line: the
service's settings and state found without flags, ``history`` of an unknown name,
``verify`` taking the digest as the tool prints it, and a unit whose config is readable."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import GIT_ENV, REPO_ROOT
from tests.fleet import Fleet

# The CLI with the service's paths moved into the test's folder: the same rule, no /etc.
SYSTEM_CLI = """import sys
from pathlib import Path
import reconciler.settings as settings
settings.SYSTEM_CONFIG_FILE = Path(sys.argv[1])
settings.SYSTEM_STATE_DIR = Path(sys.argv[2])
from reconciler.cli import main
sys.exit(main(sys.argv[3:]))
"""


def system_cli(config: Path, state: Path, *args: str, cwd: Path,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("RECONCILER_CONFIG", "STATE_DIRECTORY")}
    return subprocess.run([sys.executable, "-c", SYSTEM_CLI, str(config), str(state), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
                          env={**environment, **GIT_ENV, "HOME": str(cwd), **(env or {})})


def test_status_and_history_find_the_services_settings_and_state(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    system_config = tmp_path / "etc" / "reconciler.yaml"
    system_state = tmp_path / "var-lib-reconciler"
    system_config.parent.mkdir()
    # The service's settings name no stateDir: the unit's StateDirectory= provides it.
    system_config.write_text(f"repo: {fleet.repo}\nlisten: ''\nfleetRoot: {tmp_path / 'srv'}\n")
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    applied = system_cli(system_config, system_state, "apply", cwd=elsewhere,
                         env={"STATE_DIRECTORY": str(system_state)})  # as the service runs
    assert applied.returncode == 0, applied.stdout + applied.stderr
    status = system_cli(system_config, system_state, "status", "--output", "json",
                        cwd=elsewhere)  # an admin's shell: no flags, no STATE_DIRECTORY
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["lastPass"]["result"] == "changed"
    history = system_cli(system_config, system_state, "history", "app", cwd=elsewhere)
    assert history.returncode == 0 and "deliver" in history.stdout
    assert not (elsewhere / ".local" / "state" / "reconciler").exists()
    local = elsewhere / "reconciler.yaml"  # ./reconciler.yaml still comes first
    local.write_text(f"repo: {fleet.repo}\nstateDir: {tmp_path / 'mine'}\n")
    mine = system_cli(system_config, system_state, "status", cwd=elsewhere)
    assert mine.returncode == 1 and str(tmp_path / "mine") in mine.stderr


def test_history_of_an_unknown_name_fails_naming_the_known_ones(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.apply()
    done = subprocess.run([sys.executable, "-m", "reconciler", "history", "no-such-name",
                           "--config", str(fleet.settings_file)], capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, **GIT_ENV})
    assert done.returncode == 1
    assert "no object named 'no-such-name'" in done.stderr
    assert "known: app, policy" in done.stderr


def test_verify_accepts_the_digest_as_the_tool_prints_it(tmp_path: Path) -> None:
    artifact = tmp_path / "policy.pt"
    artifact.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()

    def verify(given: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", "verify", str(artifact),
                               "--sha256", given], capture_output=True, text=True,
                              timeout=60, check=False, cwd=tmp_path)

    printed = verify(digest).stdout.split()[-1]
    assert printed == f"sha256:{digest}"
    assert verify(printed).returncode == 0, "its own output is accepted back"
    assert verify(f"sha256:{'0' * 64}").returncode == 1
    assert verify(f"sha512:{digest}").returncode == 1


def test_the_unit_leaves_its_config_directory_readable_by_the_service() -> None:
    unit = (REPO_ROOT / "systemd" / "reconciler.service").read_text()
    assert re.search(r"^ConfigurationDirectory=reconciler$", unit, re.MULTILINE)
    # systemd makes it root:root: only the mode's "other" bits let User=reconciler in.
    mode = re.search(r"^ConfigurationDirectoryMode=(\d+)$", unit, re.MULTILINE)
    assert mode is not None and int(mode.group(1), 8) & 0o005 == 0o005
    # Secrets in it are files of group reconciler, readable by nobody else (the docs say so).
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert "install -m 0640 -o root -g reconciler" in operations
