"""What a hostile repository or a damaged state dir must not do, through the CLI and the
daemon as subprocesses: held failures never reach a downstream target, a 1,500-level
tree is a diagnostic (never a RecursionError), a damaged journal is one clear line."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from reconciler.diagnostics import InvalidInput
from reconciler.journal import Journal
from reconciler.source.directory import DirectorySnapshot
from reconciler.source.git import GitSnapshot, GitSource
from reconciler.source.snapshot import TreeLimits
from tests.conftest import Result, git
from tests.e2e.daemon import DaemonProcess
from tests.fleet import HEALTH, RESTART, Fleet

TARGETS = """apiVersion: reconciler/v1
kind: Target
metadata: {name: edge}
spec:
  local: {root: edge}
---
apiVersion: reconciler/v1
kind: Target
metadata: {name: prod}
spec:
  local: {root: prod}
  after: edge
  soak: 1s
"""


def held_strategy(fleet: Fleet, source: str) -> None:
    fleet.write("app.py", source)
    fleet.write("app.yaml", f"""apiVersion: reconciler/v1
kind: Strategy
metadata: {{name: app}}
spec:
  source: app.py
  targets: [edge, prod]
  deliver: {{path: app/app.py}}
  restart: {{command: [python3, -c, "{RESTART}"], timeout: 10s}}
  health: {{command: [python3, -c, "{HEALTH}"], timeout: 1s}}
  onFailure: hold
""")


def _objects(cli: Callable[..., Result], fleet: Fleet) -> dict[str, dict[str, str]]:
    done = cli("status", "--config", str(fleet.settings_file), "--output", "json")
    assert done.returncode == 0, done.stderr
    return {f"{o['target']}/{o['name']}": o for o in json.loads(done.stdout)["objects"]
            if o["kind"] == "Strategy"}


def _prod(fleet: Fleet) -> str:
    return (fleet.state / "fleet" / "prod" / "app" / "app.py").read_text()


def test_a_held_failure_stays_stalled_and_never_reaches_the_downstream_target(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.write("targets.yaml", TARGETS)
    held_strategy(fleet, "OK = 'v1'\n")
    fleet.commit("two targets, production after a soak on edge")
    apply = ("apply", "--config", str(fleet.settings_file))
    assert cli(*apply).returncode == 0
    time.sleep(1.1)  # the soak on edge
    assert cli(*apply).returncode == 0
    assert _prod(fleet) == "OK = 'v1'\n"

    held_strategy(fleet, "BROKEN = 'fails its health check'\n")
    fleet.commit("a failing change, held")
    assert cli(*apply).returncode == 1
    assert (fleet.root / "app" / "app.py").read_text().startswith("BROKEN"), "held in place"
    for _ in range(2):  # passes after the soak: the held content must never count healthy
        time.sleep(1.1)
        again = cli(*apply)
        assert again.returncode == 1, again.stdout
        assert "FailedBefore" in again.stdout or "blocked" in again.stdout
        assert _prod(fleet) == "OK = 'v1'\n", "held content reached production"
    edge = _objects(cli, fleet)["edge/app"]
    assert edge["status"] == "Stalled" and "health check failed" in edge["message"]
    assert edge["healthy_digest"] != edge["failed_digest"]

    fleet.write("unrelated.txt", "a new commit releases the held content for one more try")
    fleet.commit("an unrelated commit")
    retried = cli(*apply)
    assert retried.returncode == 1 and "failed" in retried.stdout, "one more check, failed"
    assert _prod(fleet) == "OK = 'v1'\n"

    held_strategy(fleet, "OK = 'v2'\n")
    fleet.commit("the fix")
    assert cli(*apply).returncode == 0
    time.sleep(1.1)
    assert cli(*apply).returncode == 0
    assert _prod(fleet) == "OK = 'v2'\n"
    assert _objects(cli, fleet)["edge/app"]["status"] == "Ready"


def _deep_tree(folder: Path, levels: int) -> None:
    """``levels`` nested folders, made without recursion (os.makedirs recurses too)."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=descriptor)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        leaf = os.open("leaf.yaml", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=descriptor)
        os.write(leaf, b"a: 1\n")
        os.close(leaf)
    finally:
        os.close(descriptor)


def _remove_tree(top: Path) -> None:
    """What shutil.rmtree (recursive) cannot remove: pytest's own cleanup would fail."""
    folders, pending = [], [str(top)]
    while pending:
        folder = pending.pop()
        folders.append(folder)
        with os.scandir(folder) as listing:
            for item in listing:
                if item.is_dir(follow_symlinks=False):
                    pending.append(item.path)
                else:
                    os.unlink(item.path)
    for folder in reversed(folders):
        os.rmdir(folder)


def test_a_1500_level_tree_is_a_diagnostic_for_validate_apply_and_run(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    fleet.apply()
    _deep_tree(fleet.repo / "desired-state", 1500)
    fleet.commit("1,500 nested folders")
    try:
        _deep_tree_is_refused(fleet, tmp_path, cli)
    finally:
        _remove_tree(fleet.repo / "desired-state" / "d")


def _deep_tree_is_refused(fleet: Fleet, tmp_path: Path, cli: Callable[..., Result]) -> None:
    for args in (("validate", str(fleet.repo / "desired-state")),
                 ("validate", "--config", str(fleet.settings_file), "--rev", "main"),
                 ("apply", "--config", str(fleet.settings_file))):
        done = cli(*args)
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert "RecursionError" not in output and "Traceback" not in output, output[:3000]
        assert "/d/d/d:1:1: folders nest 33 deep here" in output and "[tree-depth]" in output
    daemon = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
    try:
        assert "invalid" in daemon.wait_ready()
        assert "[tree-depth]" in daemon.log() and "RecursionError" not in daemon.log()
        assert daemon.process.poll() is None, "the daemon keeps running"
    finally:
        assert daemon.stop() == 0
    assert (fleet.root / "app" / "app.py").read_text().startswith("OK"), "fleet kept"


def test_a_damaged_journal_is_one_clear_line_and_the_documented_recovery_works(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    config = ("--config", str(fleet.settings_file))
    assert cli("apply", *config).returncode == 0
    journal = fleet.state / "journal.db"
    size = journal.stat().st_size
    page = 4096
    assert size >= 4 * page, size
    with open(journal, "r+b") as stream:  # a whole page in the middle, overwritten
        stream.seek((size // page // 2) * page)
        stream.write(b"\xa5" * page)
    for command in ("apply", "status", "history", "plan", "run"):
        done = cli(command, *config)
        assert done.returncode == 1, (command, size, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, (command, done.stderr)
        assert f"JournalCorrupt: the journal {journal} is damaged" in lines[0]
        assert "move it aside" in lines[0]

    for suffix in ("", "-wal", "-shm"):  # the recovery docs/operations.md gives
        aside = Path(f"{journal}{suffix}")
        if aside.exists():
            aside.rename(f"{journal}{suffix}.corrupt")
    assert cli("apply", *config).returncode == 0
    assert cli("status", *config).returncode == 0
    assert (fleet.root / "app" / "app.py").read_text().startswith("OK")


@pytest.mark.parametrize(("limits", "rule", "where"), [
    (TreeLimits(max_entries=2), "tree-entries", "big.py"),
    (TreeLimits(max_file_bytes=100), "tree-file-size", "big.py"),
    (TreeLimits(max_total_bytes=150), "tree-total-size", "link"),
    (TreeLimits(max_link_bytes=10), "tree-link-size", "link"),
])
def test_every_tree_limit_is_a_diagnostic_in_both_sources(
        tmp_path: Path, limits: TreeLimits, rule: str, where: str) -> None:
    repo = tmp_path / "repo"
    folder = repo / "desired-state"
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text("a: 1\n")
    (folder / "b.yaml").write_text("b: 1\n")
    (folder / "big.py").write_text("#" * 120 + "\n")
    os.symlink("a-target-longer-than-ten-bytes.yaml", folder / "link")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "four entries")
    source = GitSource(str(repo), "main", "desired-state", tmp_path / "mirror")
    commit = source.fetch().snapshot.commit_id
    mirror = pygit2.Repository(str(source.mirror_path))
    snapshots = (GitSnapshot(mirror, mirror[commit].peel(pygit2.Commit), "main",
                             "desired-state", limits),
                 DirectorySnapshot(folder, "desired-state/", limits))
    for snapshot in snapshots:
        with pytest.raises(InvalidInput) as refused:
            snapshot.entries()
        (diagnostic,) = refused.value.diagnostics
        assert (diagnostic.path, diagnostic.rule) == (f"desired-state/{where}", rule)


def test_copy_to_streams_large_and_small_blobs_byte_for_byte(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    folder = repo / "desired-state"
    folder.mkdir(parents=True)
    # The large one is over 1 MiB: streamed through git cat-file, not libgit2.
    contents = {"small.py": b"OK = 1\n", "large.py": os.urandom(3 << 20)}
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a small and a large module")
    snapshot = GitSource(str(repo), "main", "desired-state", tmp_path / "mirror").fetch().snapshot
    for source in (snapshot, DirectorySnapshot(folder, "desired-state/")):
        entries = source.entries()
        for name, content in contents.items():
            copy = tmp_path / f"copy-{name}"
            source.copy_to(entries[name], copy)
            assert copy.read_bytes() == content
            copy.unlink()


def test_a_journal_from_before_an_upgrade_is_read_without_being_written(tmp_path: Path) -> None:
    """``status`` and ``plan`` open the journal read-only: right after an upgrade, before
    the daemon has added its new tables and columns, they must read it as it is."""
    path = tmp_path / "journal.db"
    journal = Journal(path)
    key = ("staging", "Strategy", "gepetto")
    journal.applied(key, "a" * 64, "main@sha1:" + "b" * 40, 1.0)
    journal.close()
    old = sqlite3.connect(path)
    old.executescript("ALTER TABLE objects DROP COLUMN wave; "
                      "ALTER TABLE objects DROP COLUMN owed_digest; DROP TABLE suspensions;")
    old.close()
    before = path.read_bytes()
    reader = Journal(path, readonly=True)
    try:
        [row] = reader.objects()
        assert (row["applied_digest"], row["wave"], row["owed_digest"]) == ("a" * 64, None, None)
        assert reader.suspensions() == {}
        assert reader.history(2.0).applied == {key: "a" * 64}
    finally:
        reader.close()
    assert path.read_bytes() == before, "a reader never migrates the file"
