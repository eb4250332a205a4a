"""Restart commands and health checks on a host: bounded in time, output captured.

Commands come from the repository and run without a shell, in the target's root, with a
minimal environment (the daemon's own variables, secrets included, are not passed on), as
the fleet's user when one is set (``runAs``: never the daemon's own, which can read its
state and secrets), in their own process group so a timeout kills everything they
started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

from reconciler.desired.documents import Health
from reconciler.durations import format_duration
from reconciler.places import CommandResult
from reconciler.probes import probe_http
from reconciler.processes import Identity, run_bounded

_OUTPUT_TAIL_BYTES = 2048
_DEFAULT_INTERVAL_SECONDS = 1.0


def run_command(argv: tuple[str, ...], cwd: Path, timeout: float,
                environment: Mapping[str, str], user: Identity | None = None) -> CommandResult:
    """Run ``argv`` (as ``user``, when given); ok when it exits 0 within ``timeout``. What it
    leaves running after a normal exit (a service it started) is left alone."""
    shown = " ".join(argv)
    try:
        finished = run_bounded(argv, cwd, environment, timeout, kill_leftovers=False,
                               tail_bytes=_OUTPUT_TAIL_BYTES, user=user)
    except FileNotFoundError:
        return CommandResult(False, f"command not found: {argv[0]}")
    except PermissionError as error:
        if user is None:
            return CommandResult(False, f"cannot run {shown}: {error.strerror}")
        return CommandResult(False, f"cannot run {shown} as {user.name}: {error.strerror} (the "
                             "daemon must be root, or hold CAP_SETUID and CAP_SETGID as the "
                             "unit grants, to run commands as the fleet's user)")
    except OSError as error:
        return CommandResult(False, f"cannot run {shown}: {error.strerror}")
    tail = finished.output_tail.strip()
    if finished.timed_out:
        return CommandResult(False, f"{shown} did not finish within {format_duration(timeout)}",
                             tail)
    if finished.returncode != 0:
        last = tail.splitlines()[-1] if tail else ""
        return CommandResult(False, f"{shown} exited with {finished.returncode}"
                             + (f": {last}" if last else ""), tail)
    return CommandResult(True, f"{shown} succeeded", tail)


def _probe_once(health: Health, cwd: Path, environment: Mapping[str, str],
                user: Identity | None) -> CommandResult:
    if health.http_url is not None:
        return CommandResult(*probe_http(health.http_url, health.expect_status,
                                         health.timeout_seconds))
    assert health.command is not None
    return run_command(health.command, cwd, health.timeout_seconds, environment, user)


def check_health(health: Health, cwd: Path, environment: Mapping[str, str],
                 stop: threading.Event, user: Identity | None = None) -> CommandResult:
    """Healthy within ``timeout``, then without a failure for ``soak``."""
    interval = _DEFAULT_INTERVAL_SECONDS
    deadline = time.monotonic() + health.timeout_seconds
    result = _probe_once(health, cwd, environment, user)
    while not result.ok:
        if time.monotonic() + interval > deadline or stop.is_set():
            return CommandResult(False, f"not healthy within "
                                 f"{format_duration(health.timeout_seconds)}: {result.detail}",
                                 result.output_tail)
        time.sleep(interval)
        result = _probe_once(health, cwd, environment, user)
    soak_until = time.monotonic() + health.soak_seconds
    while time.monotonic() < soak_until:
        # A stop request ends the soak early without passing it: the caller undoes.
        if stop.wait(min(interval, max(0.0, soak_until - time.monotonic()))):
            return CommandResult(False, "stopped during the health soak")
        result = _probe_once(health, cwd, environment, user)
        if not result.ok:
            return CommandResult(False, f"failed during the {format_duration(health.soak_seconds)}"
                                 f" soak: {result.detail}", result.output_tail)
    return result
