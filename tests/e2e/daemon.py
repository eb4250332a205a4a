"""The daemon as a real subprocess, with a real datagram socket as NOTIFY_SOCKET."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import GIT_ENV


class DaemonProcess:
    def __init__(self, settings_file: Path, state_dir: Path, scratch: Path,
                 entry: tuple[str, ...] = ("-m", "reconciler")) -> None:
        self.settings_file = settings_file
        self.state_dir = state_dir
        self.log_path = scratch / f"daemon-{time.monotonic_ns()}.log"
        self.notify_path = scratch / f"notify-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.messages: list[str] = []
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, *entry, "run", "--config", str(settings_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **GIT_ENV, "NOTIFY_SOCKET": str(self.notify_path),
                     "WATCHDOG_USEC": "2000000", "PYTHONUNBUFFERED": "1",
                     "PYTHONFAULTHANDLER": "1"})
        os.environ.pop("WATCHDOG_PID", None)

    def receive(self, timeout: float) -> list[str]:
        """Notify messages that arrived within ``timeout`` (all of them, in order)."""
        self.notify.settimeout(timeout)
        try:
            while True:
                self.messages.append(self.notify.recv(4096).decode())
                self.notify.settimeout(0.01)
        except (TimeoutError, BlockingIOError):
            pass
        return self.messages

    def wait_for_message(self, prefix: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.receive(0.1):
                if message.startswith(prefix):
                    return message
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n"
                                     f"{self.log()}")
        raise AssertionError(f"no {prefix!r} within {timeout}s; got {self.messages}\n"
                             f"{self.log()}")

    def wait_ready(self, timeout: float = 30) -> str:
        return self.wait_for_message("READY=1", timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def address(self) -> str:
        return str(json.loads((self.state_dir / "daemon.json").read_text())["listen"])

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        # Drain first: the socket queues 10 datagrams (net.unix.max_dgram_qlen) and the
        # daemon drops what does not fit, STOPPING=1 included, on a slow machine.
        self.receive(0.01)
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # faulthandler prints every thread
            self.process.wait(10)
            raise AssertionError(f"daemon ignored signal {signum}:\n{self.log()}") from None
        self.receive(0.2)  # what it said on the way out stays readable in self.messages
        self.notify.close()
        return code

    def kill9(self) -> None:
        self.process.kill()
        # A killed process exits only after an fsync it was in returns: seconds on a disk
        # another test worker is filling (a virtualenv build).
        self.process.wait(60)
        self.notify.close()


@contextlib.contextmanager
def running(settings_file: Path, state_dir: Path, scratch: Path,
            entry: tuple[str, ...] = ("-m", "reconciler")) -> Iterator[DaemonProcess]:
    """A daemon for the length of a ``with``: stopped (or its socket closed) on the way out."""
    process = DaemonProcess(settings_file, state_dir, scratch, entry)
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.stop()
        elif not process.notify._closed:  # type: ignore[attr-defined]
            process.notify.close()


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "") -> float:
    """Seconds it took; AssertionError naming ``what`` if it never happened."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_services(fleet_root: Path) -> None:
    """Services the example's runner started outlive the daemon by design; tests end them."""
    for pid_file in fleet_root.glob("*/run/runner.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
