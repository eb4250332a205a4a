"""The pull-request workflow on the author's side: the pre-commit hook (run by the real
``pre-commit`` package, offline, against a temporary repository) and ``validate --output
json`` for CI annotations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from reconciler.app import Wiring
from reconciler.passes import render_planned
from reconciler.prcheck import plan_revision
from tests.conftest import EXAMPLE, GIT_ENV, REPO_ROOT, Result, git
from tests.fleet import Fleet, sha

PRE_COMMIT = shutil.which("pre-commit", path=str(Path(sys.executable).parent))


def _broken(folder: Path) -> tuple[Path, int]:
    """A Model naming a gauntlet that does not exist: its path (as given) and the line."""
    model = next(p for p in folder.rglob("*.yaml") if "kind: Model" in p.read_text())
    text = model.read_text()
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "gauntlet:" in row)
    model.write_text(text.replace("gauntlet: ", "gauntlet: no-such-", 1))
    return model.relative_to(folder.parent), line


@pytest.mark.skipif(PRE_COMMIT is None, reason="pre-commit is a test dependency "
                    "(pyproject.toml [test]); scripts/bootstrap.sh installs it")
def test_the_pre_commit_hook_checks_the_folders_of_the_staged_files(tmp_path: Path) -> None:
    repo = tmp_path / "fleet"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shutil.copytree(EXAMPLE, repo / "desired-state")
    (repo / "README.md").write_text("fleet\n")
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {REPO_ROOT}\n    rev: HEAD\n"
        "    hooks: [{id: reconciler-validate-system}]\n")
    env = {**os.environ, **GIT_ENV, "PRE_COMMIT_HOME": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO_ROOT)}

    def pre_commit(*args: str) -> subprocess.CompletedProcess[str]:
        # try-repo: the hooks as this checkout defines them (.pre-commit-hooks.yaml), with
        # uncommitted changes included; nothing is downloaded for a system hook.
        return subprocess.run([str(PRE_COMMIT), "try-repo", str(REPO_ROOT),
                               "reconciler-validate-system", "--verbose", *args], cwd=repo,
                              env=env, capture_output=True, text=True, timeout=300,
                              check=False)

    git(repo, "add", "-A")
    passed = pre_commit("--all-files")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "desired-state/: valid" in passed.stdout

    model, line = _broken(repo / "desired-state")
    git(repo, "add", "-A")
    failed = pre_commit("--files", str(model))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"{model}:{line}:" in failed.stdout and "no-such-" in failed.stdout

    only_readme = pre_commit("--files", "README.md")  # the broken model is not looked at
    assert only_readme.returncode == 0 and "Skipped" in only_readme.stdout


def test_validate_output_json_gives_errors_as_objects(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    folder = tmp_path / "desired-state"
    shutil.copytree(EXAMPLE, folder)
    model, line = _broken(folder)
    (tmp_path / "notes.txt").write_text("not desired state\n")
    done = cli("validate", "--output", "json", str(model), "notes.txt", "gone.yaml",
               cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is False and report["checked"] == []
    by_file = {error["file"]: error for error in report["errors"]}
    assert set(by_file) == {str(model), "gone.yaml"}
    error = by_file[str(model)]
    assert set(error) == {"file", "line", "column", "rule", "message"}
    assert error["line"] == line and error["column"] >= 1 and "no-such-" in error["message"]
    assert by_file["gone.yaml"]["rule"] == "path-missing"

    shutil.rmtree(folder)
    shutil.copytree(EXAMPLE, folder)
    fine = cli("validate", "-o", "json", str(next(folder.rglob("*.yaml"))), cwd=tmp_path)
    assert fine.returncode == 0, fine.stdout + fine.stderr
    [checked] = json.loads(fine.stdout)["checked"]
    assert checked["folder"] == "desired-state/" and checked["counts"]["models"] == 1


def test_a_pull_requests_plan_reads_only_what_the_branch_already_delivers(
        tmp_path: Path) -> None:
    """``POST /plan``'s plan_revision: a pull request that adds a file at an address the
    branch does not manage, or points its Target at another root, learns neither what
    lives there nor its digest; what the branch delivers is still diffed against live."""
    fleet = Fleet(tmp_path)
    assert fleet.apply().result == "changed"
    secret = "DB_PASSWORD=hunter2-7f3c\n"
    (fleet.root / "secrets.env").write_text(secret)
    elsewhere = fleet.state / "fleet" / "elsewhere" / "app"
    elsewhere.mkdir(parents=True)
    (elsewhere / "app.py").write_text(secret)
    git(fleet.repo, "checkout", "-q", "-b", "pr/9")
    fleet.strategy("OK = 'serving v2'\n")
    fleet.write("leak.yaml", "apiVersion: reconciler/v1\nkind: Config\nmetadata: {name: leak}"
                "\nspec: {targets: [edge], deliver: {path: secrets.env}, data: {x: 1}}\n")
    adds = fleet.commit("a pull request delivering over an unmanaged file")
    fleet.write("targets.yaml", (fleet.repo / "desired-state" / "targets.yaml").read_text()
                .replace("root: edge", "root: elsewhere"))
    moves = fleet.commit("a pull request moving the target")
    git(fleet.repo, "checkout", "-q", "main")

    def planned(rev: str) -> dict[str, Any]:
        journal = fleet.journal()
        try:
            now = time.time()
            plan, trusted = plan_revision(Wiring(fleet.settings()), journal.history(now),
                                          rev, now)
            return cast(dict[str, Any], json.loads(render_planned(plan, "json", trusted)))
        finally:
            journal.close()

    for rev in (adds, moves):
        shown = json.dumps(planned(rev))
        assert "hunter2" not in shown and sha(secret.encode()) not in shown, rev
    actions = {a["name"]: a for a in planned(adds)["actions"]}
    assert (actions["leak"]["op"], actions["leak"]["current"]) == ("create", None)
    assert "-OK = 'serving'" in actions["app"]["diff"]


def test_validate_output_json_is_json_when_it_cannot_even_look(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    """CI parses stdout: unreadable settings and a revision that does not exist are errors
    in the same document (the settings' with file and line; the revision's with its
    reason as the rule and no place), not text on stdout or nothing at all."""
    fleet = Fleet(tmp_path)
    unknown = cli("validate", "-o", "json", "--config", str(fleet.settings_file),
                  "--rev", "no-such-branch")
    unreadable = cli("validate", "-o", "json", "--config", str(tmp_path / "missing.yaml"))
    assert (unknown.returncode, unreadable.returncode) == (1, 1)
    [missing] = json.loads(unknown.stdout)["errors"]
    assert missing["rule"] == "RevisionNotFound" and "no-such-branch" in missing["message"]
    assert missing["file"] is None and missing["line"] is None
    report = json.loads(unreadable.stdout)
    assert report["valid"] is False and report["checked"] == []
    [settings] = report["errors"]
    assert (settings["file"], settings["rule"]) == (str(tmp_path / "missing.yaml"),
                                                    "settings-unreadable")
