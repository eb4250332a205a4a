"""The documented install on a systemd host (docs/install.md): scripts/install-opt.sh into
a root prefix makes a venv that names /opt/reconciler, the link the unit runs, and — with
the real systemd-sysusers and systemd-tmpfiles — the user and the directories the unit
needs; the installed command then runs from where it will live (bubblewrap puts the venv
at /opt/reconciler)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import __version__
from tests.conftest import EXAMPLE, REPO_ROOT

SYSTEMD = REPO_ROOT / "systemd"


def _unit_values(key: str) -> list[str]:
    text = (SYSTEMD / "reconciler.service").read_text()
    return [value for line in text.splitlines()
            if (value := line.partition("=")[2]) and line.startswith(f"{key}=")]


def test_sysusers_and_tmpfiles_make_what_the_unit_needs() -> None:
    """The unit runs as a user sysusers.d creates, and every ReadWritePaths= (which must
    exist, or the start fails with 226/NAMESPACE) is a directory tmpfiles.d creates for
    that user."""
    [user] = _unit_values("User")
    [group] = _unit_values("Group")
    users = [line.split() for line in (SYSTEMD / "reconciler.sysusers").read_text()
             .splitlines() if line and not line.startswith("#")]
    assert [fields[:3] for fields in users] == [["u", user, "-"]]
    assert group == user, "sysusers' u line makes the group of the same name"
    directories = {fields[1]: fields for fields in (
        line.split() for line in (SYSTEMD / "reconciler.tmpfiles").read_text().splitlines()
        if line and not line.startswith("#"))}
    written = [path for value in _unit_values("ReadWritePaths") for path in value.split()]
    assert written
    for path in written:
        kind, _, mode, owner, owner_group, _ = directories[path.lstrip("-")]
        assert (kind, owner, owner_group) == ("d", user, group)
        assert int(mode, 8) & 0o002 == 0, "not world-writable"
    # The settings template's fleet root is the directory the unit may write.
    settings = (SYSTEMD / "reconciler.yaml").read_text()
    [fleet_root] = re.findall(r"^fleetRoot: (\S+)", settings, re.M)
    assert fleet_root in written
    assert "/etc/reconciler" in directories


@pytest.mark.slow
def test_the_opt_install_runs_from_where_it_will_live(tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = subprocess.run([str(REPO_ROOT / "scripts" / "install-opt.sh"), "--root", str(root)],
                          capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-3000:]
    venv = root / "opt" / "reconciler"
    link = root / "usr" / "local" / "bin" / "reconciler"
    assert os.readlink(link) == "/opt/reconciler/bin/reconciler"
    assert (venv / "bin" / "reconciler").read_text().startswith("#!/opt/reconciler/bin/python")
    staged = [p.name for p in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]
              if p.is_file() and not p.is_symlink() and str(root).encode() in p.read_bytes()]
    assert staged == [], "the staging root leaked into the venv"
    installed = root / "etc" / "systemd" / "system" / "reconciler.service"
    assert installed.read_text() == (SYSTEMD / "reconciler.service").read_text()
    assert "ExecStart=/usr/local/bin/reconciler run" in installed.read_text()
    assert (root / "etc" / "reconciler" / "reconciler.yaml").is_file()
    # systemd-sysusers and systemd-tmpfiles ran against the root.
    [account] = [line.split(":") for line in (root / "etc" / "passwd").read_text()
                 .splitlines() if line.startswith("reconciler:")]
    assert account[5:] == ["/var/lib/reconciler", "/usr/sbin/nologin"]
    fleet = (root / "srv" / "fleet").stat()
    assert (fleet.st_uid, fleet.st_gid) == (int(account[2]), int(account[3]))
    # The command, from /opt/reconciler as the unit will find it, on the example.
    at_opt = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/opt",
              "--ro-bind", str(venv), "/opt/reconciler", "--", str(link)]
    version = subprocess.run([*at_opt, "--version"], capture_output=True, text=True,
                             timeout=120, check=False)
    assert version.stdout.strip() == f"reconciler {__version__}", version.stderr
    validated = subprocess.run([*at_opt, "validate", str(EXAMPLE)], capture_output=True,
                               text=True, timeout=300, check=False, cwd=tmp_path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "2 strategies" in validated.stdout
