"""The daemon's parts on their own: sd_notify, the unit file, journal, lock, backoff."""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.daemon.backoff import Backoff
from reconciler.daemon.lock import FleetLock, FleetLocked
from reconciler.daemon.sdnotify import Notifier
from reconciler.journal import Journal
from tests.conftest import REPO_ROOT

UNIT = REPO_ROOT / "systemd" / "reconciler.service"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    yield receiver, path
    receiver.close()


def test_notify_protocol_over_a_real_datagram_socket(
        notify_socket: tuple[socket.socket, str]) -> None:
    receiver, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000",
                         "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == 2.0
    notifier.ready("main@abc converged:\n6 in sync")
    notifier.status("applying")
    notifier.watchdog()
    notifier.stopping("bye")
    messages = [receiver.recv(4096).decode() for _ in range(4)]
    assert messages == ["READY=1\nSTATUS=main@abc converged: 6 in sync", "STATUS=applying",
                        "WATCHDOG=1", "STOPPING=1\nSTATUS=bye"]


def test_abstract_socket_and_foreign_watchdog_pid() -> None:
    name = f"reconciler-test-{os.getpid()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(5)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000",
                             "WATCHDOG_PID": "1"})
        assert notifier.watchdog_interval is None  # the watchdog is some other process's
        notifier.status("hello")
        assert receiver.recv(100) == b"STATUS=hello"
    finally:
        receiver.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    notifier.ready("x")
    notifier.watchdog()
    assert notifier.watchdog_interval is None


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists; only the binary's install path is rewritten.
    binary = shutil.which("reconciler") or str(Path(sys.executable).with_name("reconciler"))
    unit = tmp_path / "reconciler.service"
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/reconciler run" in text
    unit.write_text(text.replace("ExecStart=/usr/local/bin/reconciler",
                                 f"ExecStart={binary}"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_unit_file_is_hardened_to_2_2_or_lower() -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                            capture_output=True, text=True, check=False)
    found = re.search(r"Overall exposure level for reconciler.service: ([0-9.]+)",
                      result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.2
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitBurst=",
                 "StateDirectory=reconciler"):
        assert line in text


# What bubblewrap 0.8 calls to build a sandbox like reconciler.sandbox's, beyond what any
# process needs: `strace -f` of one start (namespaces, binds, /proc, tmpfs, prlimit).
BWRAP_SYSCALLS = ("capget", "capset", "chdir", "clone", "fchdir", "mkdir", "mount",
                  "pivot_root", "prctl", "prlimit64", "setsid", "signalfd4", "symlink",
                  "umask", "umount2", "unshare", "wait4", "eventfd2", "statfs", "socket")


def _syscall_groups() -> dict[str, list[str]]:
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                          text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    members: list[str] = []
    for line in text.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.split()[0], [])
        elif line.strip() and not line.strip().startswith("#"):
            members.append(line.strip())
    return groups


def test_unit_lets_the_sandbox_start() -> None:
    groups = _syscall_groups()

    def expand(names: list[str]) -> set[str]:
        found: set[str] = set()
        for name in names:
            found |= expand(groups[name]) if name.startswith("@") else {name}
        return found

    lines = [line.split("=", 1)[1].split() for line in UNIT.read_text().splitlines()
             if line.startswith("SystemCallFilter=")]
    allowed = expand(lines[0]) - expand([n.lstrip("~") for line in lines[1:] for n in line])
    assert [call for call in BWRAP_SYSCALLS if call not in allowed] == []
    assert "capset" in expand(["@privileged"])  # the check above can fail
    namespaces = re.search(r"^RestrictNamespaces=(.*)$", UNIT.read_text(), re.M)
    assert namespaces and set(namespaces.group(1).split()) >= {
        "user", "mnt", "pid", "ipc", "uts", "net"}
    # Inherited by every child for good: it broke torch's CPU kernels in the worker.
    assert "MemoryDenyWriteExecute=yes" not in UNIT.read_text()


def test_journal_intents_outcomes_and_recovery(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    key = ("staging", "Strategy", "gepetto")
    pass_id = journal.begin_pass("main@sha1:aaa")
    done = journal.intent("deliver", key, pass_id=pass_id, revision="main@sha1:aaa",
                          detail={"to": "d1"})
    journal.outcome(done, "done")
    journal.intent("restart", key, pass_id=pass_id, revision="main@sha1:aaa", detail={})
    journal.close()  # as if killed here: one intent and the pass are left open

    reopened = Journal(tmp_path / "journal.db")
    assert reopened.integrity_ok()
    interrupted = reopened.recover()
    assert [e.action for e in interrupted] == ["restart"]
    assert reopened.recover() == []
    phases = [(e.action, e.phase) for e in reopened.events("gepetto")]
    assert phases == [("deliver", "intent"), ("deliver", "done"), ("restart", "intent"),
                      ("restart", "interrupted")]
    assert reopened.last_pass()["result"] == "interrupted"  # type: ignore[index]
    mode = sqlite3.connect(tmp_path / "journal.db").execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)


def test_journal_history_feeds_the_planner(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    key = ("staging", "Model", "policy")
    journal.applied(key, "d1", "main@sha1:1", healthy_since=100.0)
    journal.applied(key, "d1", "main@sha1:2", healthy_since=200.0)  # same digest: keeps 100
    journal.canonical("policy", "d1")
    journal.failed(key, "d2", "main@sha1:3", "RolledBack", "health check failed")
    history = journal.history(time.time())
    assert history.applied[key] == "d1"
    assert history.healthy_since[key] == ("d1", 100.0)
    assert history.failed[key] == ("d2", "main@sha1:3")
    assert history.known_good == {"policy": frozenset({"d1"})}
    assert journal.object(key)["reason"] == "RolledBack"  # type: ignore[index]


def test_second_holder_is_refused_with_who_holds_it(tmp_path: Path) -> None:
    first = FleetLock(tmp_path / "fleet", "daemon")
    first.acquire()
    holder = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from reconciler.daemon.lock import FleetLock, FleetLocked\n"
         "try:\n FleetLock(Path(sys.argv[1]), 'apply').acquire()\n"
         "except FleetLocked as e:\n print(e); sys.exit(3)", str(tmp_path / "fleet")],
        capture_output=True, text=True, check=False)
    assert holder.returncode == 3
    assert f"(pid {os.getpid()}: " in holder.stdout  # named from /proc/locks
    with pytest.raises(FleetLocked):
        FleetLock(tmp_path / "fleet", "apply").acquire()  # another descriptor, same process
    first.release()
    second = FleetLock(tmp_path / "fleet", "apply")
    second.acquire()
    second.release()


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap() -> None:
    backoff = Backoff(base=1, cap=60, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    for attempt, delay in enumerate(delays):
        ceiling = min(60, 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[-4:]}) == 4  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_a_full_notify_queue_never_blocks_the_daemon(
        notify_socket: tuple[socket.socket, str]) -> None:
    _, path = notify_socket  # bound, never read: its queue fills up
    notifier = Notifier({"NOTIFY_SOCKET": path})
    for _ in range(5000):
        notifier.status("x" * 200)  # a blocking send would hang here


def test_an_unchanged_object_is_not_rewritten(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    key = ("staging", "Config", "knobs")
    journal.applied(key, "d1", "main@sha1:1", healthy_since=100.0)
    first = journal.object(key)
    journal.applied(key, "d1", "main@sha1:1", healthy_since=999.0)
    assert journal.object(key) == first  # not even updated_at moved
    journal.applied(key, "d1", "main@sha1:2", healthy_since=999.0)
    moved = journal.object(key) or {}
    assert moved["applied_revision"] == "main@sha1:2" and moved["healthy_since"] == 100.0


def test_the_daemon_process_never_imports_torch() -> None:
    probe = ("import sys, reconciler.cli, reconciler.daemon.daemon, reconciler.artifacts.fetch\n"
             "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_the_run_as_drop_in_grants_exactly_what_switching_users_needs(tmp_path: Path) -> None:
    drop_in = UNIT.parent / "drop-ins" / "run-as.conf"
    service_lines = [line for line in drop_in.read_text().splitlines()
                     if line and not line.startswith(("#", "["))]
    assert {line.split("=", 1)[0] for line in service_lines} == {
        "CapabilityBoundingSet", "AmbientCapabilities", "PrivateUsers", "SystemCallFilter"}
    merged = tmp_path / "reconciler.service"
    text = UNIT.read_text()
    merged.write_text(text.replace("\n[Install]", "\n" + "\n".join(service_lines)
                                   + "\n\n[Install]"))
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(merged)],
                            capture_output=True, text=True, check=False)
    found = re.search(r"Overall exposure level for reconciler.service: ([0-9.]+)",
                      result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert 2.2 < float(found.group(1)) <= 2.8, "the documented cost of switching users"
    assert "CAP_SETUID CAP_SETGID" in drop_in.read_text()
