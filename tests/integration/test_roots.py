"""Issue 12, defect 1: a Target's root stays inside the fleet root (or an allowed root),
clear of the daemon's state dir and of every other root; a broken rule is reported with
file:line:col and its rule, the pass is invalid and the fleet unchanged. Through the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result
from tests.fleet import HEALTHY, Fleet, sha


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


EVIL = """apiVersion: reconciler/v1
kind: Target
metadata: {name: evil}
spec:
  local: {root: ../store/sha256}
---
apiVersion: reconciler/v1
kind: Config
metadata: {name: planted}
spec:
  targets: [evil]
  format: json
  data: {weights: forged}
  deliver: {path: %s}
"""


def test_a_root_escaping_into_the_store_is_refused_with_file_line_and_rule(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    config = str(fleet.settings_file)
    assert cli("apply", "--config", config).returncode == 0
    before = (_files(fleet.state / "store" / "sha256"), _files(fleet.root))
    # The next model's digest, "delivered" as a Config straight into the store.
    forged = sha(b"weights-v2")
    fleet.write("evil.yaml", EVIL % forged)
    fleet.commit("a target whose root is the store")
    where = "desired-state/evil.yaml:5:17: local root '../store/sha256' resolves to "
    applied = cli("apply", "--config", config)
    assert applied.returncode == 1
    assert "invalid: 1 error in the desired state, fleet unchanged" in applied.stdout
    assert where in applied.stdout and "[root-escape]" in applied.stdout
    assert not (fleet.state / "store" / "sha256" / forged).exists()
    assert (_files(fleet.state / "store" / "sha256"), _files(fleet.root)) == before
    checked = cli("validate", "--config", config)
    assert checked.returncode == 1 and where in checked.stdout, checked.stdout
    folder = cli("validate", str(fleet.repo / "desired-state"), "--config", config)
    assert folder.returncode == 1 and "evil.yaml:5:17:" in folder.stdout, folder.stdout
    assert "[root-escape]" in folder.stdout
    planned = cli("plan", "--config", config)
    assert planned.returncode == 1 and "[root-escape]" in planned.stderr


def _target(name: str, root: str) -> str:
    return (f"---\napiVersion: reconciler/v1\nkind: Target\nmetadata: {{name: {name}}}\n"
            f"spec:\n  local: {{root: '{root}'}}\n")


def test_roots_over_the_state_dir_or_each_other_are_refused_and_allowed_roots_admitted(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    # The fleet root is the state dir itself: a root of "." would reach the journal.
    allowed = tmp_path / "srv" / "models"
    fleet.settings_file.write_text(f"repo: {fleet.repo}\nstateDir: {fleet.state}\n"
                                   f"fleetRoot: {fleet.state}\nlisten: ''\n"
                                   f"allowedRoots: [{tmp_path / 'srv'}]\n")
    fleet.write("more.yaml", _target("whole", ".") + _target("inner", "edge/inner")
                + _target("allowed", str(allowed)) + _target("elsewhere", str(tmp_path)))
    fleet.commit("roots that overlap")
    checked = cli("validate", "--config", str(fleet.settings_file))
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert any("more.yaml:24:" in line and "[root-escape]" in line for line in lines), lines
    assert any("more.yaml:6:" in line and "overlaps the daemon's state dir" in line
               and "[root-state]" in line for line in lines), lines
    assert any("more.yaml:12:" in line and "overlaps the root of Target 'edge'" in line
               and "[root-overlap]" in line for line in lines), lines
    assert not any("more.yaml:18:" in line for line in lines), "an allowed root is fine"
    assert cli("apply", "--config", str(fleet.settings_file)).returncode == 1
    assert not (fleet.state / "app").exists() and not (fleet.state / "edge").exists()

    fleet.write("more.yaml", _target("allowed", str(allowed)))
    fleet.commit("only the allowed root")
    assert cli("apply", "--config", str(fleet.settings_file)).returncode == 0
    assert (fleet.state / "edge" / "app" / "app.py").read_text() == HEALTHY
