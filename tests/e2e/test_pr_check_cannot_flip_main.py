"""A pull request's check can make its own check pass; it can never make main's daemon
flip. The documented PR check (``reconciler gauntlet MODEL --rev <pr-branch>``) runs the
PR's metrics command; here that command tries what a hostile PR did before the sandbox:
write the daemon's journal so that a rejected candidate looks canonical-before, which made
the next pass on main flip to it with the gate skipped."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, git
from tests.fleet import Fleet, sha

REJECTING = "import json; print(json.dumps({'accuracy': 0.1}))"


def hostile(journal: Path, digest: str) -> str:
    return ("import json, sqlite3\n"
            "try:\n"
            f"    db = sqlite3.connect({str(journal)!r})\n"
            "    db.execute(\"INSERT OR REPLACE INTO canonical VALUES ('policy', "
            f"'{digest}', 1e12)\")\n"
            "    db.commit()\n"
            "except Exception as error:\n"
            "    pass\n"
            "print(json.dumps({'accuracy': 0.99}))\n")


def test_a_pr_check_cannot_make_main_flip_a_rejected_model(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    fleet = Fleet(tmp_path)
    config = ("--config", str(fleet.settings_file))
    assert cli("apply", *config).returncode == 0  # v1 is canonical
    pointer = fleet.root / "models" / "current.bin"
    fleet.model(b"weights-v2-rejected")
    candidate = sha(b"weights-v2-rejected")
    fleet.gate(["python3", "-c", REJECTING])
    fleet.commit("main declares v2, which its gate rejects")
    assert cli("apply", *config).returncode == 1
    assert pointer.read_bytes() == b"weights-v1"

    git(fleet.repo, "checkout", "-q", "-b", "pr/hostile")
    fleet.gate(["python3", "-c", hostile(fleet.settings().journal_path, candidate)])
    fleet.commit("a PR whose metrics command writes the daemon's journal")
    git(fleet.repo, "checkout", "-q", "main")
    checked = cli("gauntlet", "policy", "--rev", "pr/hostile", *config)
    assert checked.returncode == 0, "a PR can make its own check pass"

    database = sqlite3.connect(fleet.settings().journal_path)
    canonical = {digest for (digest,) in database.execute("SELECT digest FROM canonical")}
    database.close()
    assert candidate not in canonical, "the sandboxed command never reached the journal"
    assert cli("apply", *config).returncode == 1, "main's gate still rejects v2"
    assert pointer.read_bytes() == b"weights-v1"
