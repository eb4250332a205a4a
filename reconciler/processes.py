"""Running code we do not trust to behave: bounded in time, output captured to a file."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def command_environment(extra: Mapping[str, str], user: Identity | None = None
                        ) -> dict[str, str]:
    """A minimal environment for a program we run: the daemon's own variables, secrets
    included, are not passed on. For another ``user``, its own HOME and names."""
    identity = {"HOME": user.home, "USER": user.name, "LOGNAME": user.name} if user else {}
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"), **identity, **extra}


@dataclass(frozen=True, slots=True)
class Identity:
    """A user a command runs as (the fleet's, never the daemon's secrets-holding one)."""

    name: str
    uid: int
    gid: int
    home: str


def identity(name: str) -> Identity:
    """The user ``name`` of this host; LookupError naming it when there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"no user {name!r} on this host (create it, or fix runAs)") from None
    return Identity(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


@dataclass(frozen=True, slots=True)
class Finished:
    timed_out: bool
    returncode: int
    output_tail: str


def run_bounded(argv: Sequence[str], cwd: Path, environment: Mapping[str, str],
                timeout: float, *, kill_leftovers: bool, tail_bytes: int = 4096,
                user: Identity | None = None) -> Finished:
    """Run ``argv`` in a session of its own. Output goes to a file, so a chatty program
    cannot fill memory, and only its tail is kept. On timeout the whole process group is
    killed; ``kill_leftovers`` also kills what it left running after a normal exit.
    OSError (FileNotFoundError for a missing program) if it cannot start; PermissionError
    when it should run as another ``user`` and this process may not switch (it needs root,
    or CAP_SETUID and CAP_SETGID)."""
    switch = user is not None and user.uid != os.geteuid()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(list(argv), cwd=cwd, env=dict(environment),
                                   stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   user=user.uid if switch and user else None,
                                   group=user.gid if switch and user else None,
                                   extra_groups=[] if switch else None)
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
