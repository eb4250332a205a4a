"""The daemon as a subprocess against hostile inputs: artifacts that never end, servers that
crawl, clients that connect and say nothing, steps longer than the systemd watchdog."""

from __future__ import annotations

import contextlib
import http.server
import os
import resource
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.daemon import DaemonProcess, running, wait_until
from tests.fleet import HEALTHY, MODEL_HEALTH, RESTART, Fleet

SECRET = b"a-webhook-secret-of-32-bytes-xyz"
KEY = ("edge", "Model", "policy")


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    made = Fleet(tmp_path)
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    (tmp_path / "artifacts").mkdir()
    made.settings_file.write_text(
        f"repo: {made.repo}\nstateDir: {made.state}\nlisten: 127.0.0.1:0\nresync: 1h\n"
        "webhook: {secretFile: secret}\n"
        # a 1 MiB reserve: the state directory of one test is a 16 MiB tmpfs
        "artifacts: {fileRoots: [artifacts, /dev], timeout: 3s, reserveBytes: 1048576}\n")
    return made


def declare_artifact(fleet: Fleet, uri: str) -> None:
    fleet.write("model.yaml", f"""apiVersion: reconciler/v1
kind: Model
metadata: {{name: policy}}
spec:
  targets: [edge]
  artifact: {{uri: "{uri}", sha256: {"ab" * 32}, format: file}}
  pointer: {{path: models/current.bin}}
  restart: {{command: [python3, -c, "{RESTART}"]}}
  health: {{command: [python3, -c, "{MODEL_HEALTH}"], timeout: 2s}}
""")


def model_state(fleet: Fleet) -> dict[str, object]:
    journal = fleet.journal()
    try:
        return journal.object(KEY) or {}
    finally:
        journal.close()


def last_pass(fleet: Fleet) -> object:
    journal = fleet.journal()
    try:
        return (journal.last_pass() or {}).get("id")
    finally:
        journal.close()


def converged(fleet: Fleet) -> bool:
    try:
        return ((fleet.root / "app" / "app.py").read_text() == HEALTHY
                and (fleet.root / "models" / "current.bin").read_bytes() == b"weights-v1")
    except OSError:
        return False


def test_dev_zero_and_a_fifo_are_refused_without_filling_a_small_disk(
        fleet: Fleet, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the state directory needs root")
    fleet.state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(fleet.state)],
                   check=True)
    try:
        fifo = tmp_path / "artifacts" / "weights.fifo"
        os.mkfifo(fifo)
        for uri in ("file:///dev/zero", f"file://{fifo}"):
            declare_artifact(fleet, uri)
            fleet.commit(f"artifact {uri}")
            with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
                daemon.wait_ready(timeout=60)  # the first pass ended: nothing blocked it
                state = model_state(fleet)
                assert state["reason"] == "ArtifactMissing", state
                assert "not a regular file" in str(state["message"])
            info = os.statvfs(fleet.state)
            used = (info.f_blocks - info.f_bfree) * info.f_frsize
            assert used < 4 << 20, f"{used} bytes on the state disk after {uri}"
            assert not list((fleet.state / "store" / "partial").glob("*"))
        fleet.model(b"weights-v1")
        fleet.commit("revert the model")
        with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
            daemon.wait_ready(timeout=60)
            wait_until(lambda: converged(fleet), what="convergence after the revert")
    finally:
        subprocess.run(["umount", "-l", str(fleet.state)], check=False)


class SlowServer:
    """Announces a 1 GiB body and sends one byte a second, for two minutes at most."""

    def __init__(self) -> None:
        self.requests = 0
        self.done = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 30))
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(120):
                        if outer.done.wait(1.0):
                            return
                        self.wfile.write(b"x")
                        self.wfile.flush()

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/model.pt"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.done.set()
        self.http.shutdown()
        self.http.server_close()


def test_a_crawling_server_is_given_up_at_the_deadline_and_sigterm_is_honoured(
        fleet: Fleet, tmp_path: Path) -> None:
    slow = SlowServer()
    try:
        declare_artifact(fleet, slow.url)
        fleet.commit("an artifact on a crawling server")
        with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
            daemon.wait_ready(timeout=60)
            state = model_state(fleet)
            assert state["reason"] == "ArtifactUnavailable", state
            assert "gave up after 3s" in str(state["message"])
            seen = slow.requests
            assert gitlab_webhook(daemon, SECRET.decode()) == 202  # a pass now
            wait_until(lambda: slow.requests > seen, timeout=30, what="the retry's download")
            time.sleep(1.0)  # mid-download
            started = time.monotonic()
            assert daemon.stop(timeout=30) == 0
            assert time.monotonic() - started < 3, "SIGTERM waited for the download"
        assert not list((fleet.state / "store" / "partial").glob("*"))
    finally:
        slow.close()


def test_idle_connections_neither_starve_probes_nor_kill_the_daemon(
        fleet: Fleet, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # started with the soft limit it had
    with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
        daemon.wait_ready(timeout=60)
        wait_until(lambda: converged(fleet), what="convergence")
        host, port = daemon.address.rsplit(":", 1)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
        idle: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 60
            while len(idle) < 2000 and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    idle.append(socket.create_connection((host, int(port)), timeout=2))
            assert len(idle) >= 1500, f"only {len(idle)} connections opened"
            started = time.monotonic()
            with urllib.request.urlopen(f"http://{daemon.address}/healthz", timeout=5) as r:
                assert r.status == 200
            assert time.monotonic() - started < 1.0
            descriptors = len(os.listdir(f"/proc/{daemon.process.pid}/fd"))
            assert descriptors < 600, f"the daemon holds {descriptors} descriptors"
            assert gitlab_webhook(daemon, SECRET.decode()) == 202
            assert gitlab_webhook(daemon, "not-the-secret-at-all") == 401
            time.sleep(0.5)
            before = last_pass(fleet)
            assert gitlab_webhook(daemon, SECRET.decode()) == 202
            wait_until(lambda: last_pass(fleet) != before, what="a pass after the webhook")
        finally:
            for connection in idle:
                connection.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert daemon.process.poll() is None, daemon.log()
        assert len(daemon.log()) < 20_000, "the log grew with the connections"
        assert "Traceback" not in daemon.log()


def gitlab_webhook(daemon: DaemonProcess, token: str) -> int:
    request = urllib.request.Request(f"http://{daemon.address}/webhook", data=b"{}",
                                     headers={"X-Gitlab-Token": token})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_watchdog_is_fed_during_a_soak_longer_than_its_interval(
        fleet: Fleet, tmp_path: Path) -> None:
    """DaemonProcess sets WATCHDOG_USEC to 2 s: a ping a second while the loop lives."""
    with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
        daemon.wait_ready(timeout=60)
        wait_until(lambda: converged(fleet), what="convergence")
        fleet.strategy("OK = 'soaking'\n", health="command: [python3, -c, 'pass'], soak: 8s")
        head = fleet.commit("a change with a soak four times the watchdog's")
        wait_until(lambda: (fleet.root / "app" / "app.py").read_text() == "OK = 'soaking'\n",
                   what="delivery")
        daemon.receive(0.05)
        seen = len(daemon.messages)
        window = time.monotonic() + 5
        while time.monotonic() < window:
            daemon.receive(0.2)
        pings = daemon.messages[seen:].count("WATCHDOG=1")
        assert pings >= 3, daemon.messages[seen:]

        def healthy_revision() -> object:
            journal = fleet.journal()
            try:
                return (journal.object(("edge", "Strategy", "app")) or {}).get(
                    "applied_revision")
            finally:
                journal.close()

        assert healthy_revision() != f"main@sha1:{head}", "the soak had to be still running"
        wait_until(lambda: healthy_revision() == f"main@sha1:{head}", timeout=30,
                   what="the soak's end")
