"""Small things a new user hits at once, through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import GIT_ENV, Result
from tests.fleet import Fleet


def test_history_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    for version in range(3):
        fleet.strategy(f"OK = {version}\n")
        fleet.commit(f"v{version}")
        fleet.apply()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before a byte was written (``| head`` done early)
    try:
        writer = subprocess.run([sys.executable, "-m", "reconciler", "history", "--output",
                                 "json", "--config", str(fleet.settings_file)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True,
                                timeout=60, check=False, env={**os.environ, **GIT_ENV})
    finally:
        os.close(write_end)
    assert "Traceback" not in writer.stderr and "BrokenPipe" not in writer.stderr, writer.stderr
    assert writer.returncode == 141


def test_history_help_says_its_default_limit(cli: Callable[..., Result]) -> None:
    done = cli("history", "--help")
    assert done.returncode == 0 and "(default 50)" in " ".join(done.stdout.split())


def test_one_invalid_document_is_one_error_not_one_errors(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.write("broken.yaml", "apiVersion: reconciler/v1\nkind: Budget\nmetadata: {name: b}\n"
                "spec: {restartsPerHour: many}\n")
    fleet.commit("one bad document")
    outcome = fleet.apply()
    assert outcome.result == "invalid"
    assert outcome.message.startswith("1 error in the desired state, fleet unchanged")
