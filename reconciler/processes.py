"""Running code we do not trust to behave: bounded in time, output captured to a file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def command_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment for a program we run: the daemon's own variables, secrets
    included, are not passed on."""
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"), **extra}


@dataclass(frozen=True, slots=True)
class Finished:
    timed_out: bool
    returncode: int
    output_tail: str


def run_bounded(argv: Sequence[str], cwd: Path, environment: Mapping[str, str],
                timeout: float, *, kill_leftovers: bool, tail_bytes: int = 4096) -> Finished:
    """Run ``argv`` in a session of its own. Output goes to a file, so a chatty program
    cannot fill memory, and only its tail is kept. On timeout the whole process group is
    killed; ``kill_leftovers`` also kills what it left running after a normal exit.
    OSError (FileNotFoundError for a missing program) if it cannot start."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(list(argv), cwd=cwd, env=dict(environment),
                                   stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        if timed_out or kill_leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        size = output.seek(0, os.SEEK_END)
        output.seek(max(0, size - tail_bytes))
        tail = output.read().decode(errors="replace")
    return Finished(timed_out, process.returncode, tail)


def last_json_object(output: str) -> dict[str, Any] | None:
    """The last non-empty line, if it is a JSON object: how a metrics command and a
    gauntlet Job's log give their result."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
