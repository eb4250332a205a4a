"""``reconciler run`` against a commit whose strategy attacks the daemon from its import."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.daemon import DaemonProcess, wait_until
from tests.fleet import HEALTHY, Fleet


def _status_with(daemon: DaemonProcess, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in daemon.receive(0.2):
            if message.startswith("STATUS=") and text in message:
                return message
        assert daemon.process.poll() is None, f"the daemon exited:\n{daemon.log()}"
    raise AssertionError(f"no status with {text!r}: {daemon.messages}\n{daemon.log()}")


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_an_import_that_signals_its_parent_leaves_the_daemon_running(
        tmp_path: Path, signal_name: str) -> None:
    fleet = Fleet(tmp_path)
    daemon = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
    try:
        daemon.wait_ready()
        delivered = fleet.root / "app" / "app.py"
        wait_until(lambda: delivered.exists() and delivered.read_text() == HEALTHY,
                   what="first convergence")
        fleet.strategy(f"import os, signal\nos.kill(os.getppid(), signal.{signal_name})\n"
                       "raise RuntimeError('the signal did not stop me')\n")
        fleet.commit("a strategy that signals its parent")
        status = _status_with(daemon, "1 error in the desired state")
        assert "app.py" in status and "strategy-import" in status
        assert daemon.process.poll() is None
        assert delivered.read_text() == HEALTHY  # the fleet keeps its last good state
        fleet.strategy("OK = 'after the attack'\n")
        fleet.commit("a good strategy again")
        wait_until(lambda: delivered.read_text() == "OK = 'after the attack'\n",
                   what="convergence after the attack")
    finally:
        if daemon.process.poll() is None:
            assert daemon.stop() == 0
        else:
            daemon.notify.close()
