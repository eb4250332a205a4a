"""Promise 6 through the command line and the daemon: a token planted in the repository URL
(the old workaround) and in an artifact URL reaches no output, no log, no STATUS= line, no
metric and no file in the state directory, on success and on refusal alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import GIT_ENV
from tests.e2e.daemon import DaemonProcess
from tests.fleet import Fleet
from tests.integration.git_servers import HttpGitServer, http_git_server

TOKEN = "glpat-PLANTEDsecret0123456789"


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    made = Fleet(tmp_path)
    gauntlet = ("apiVersion: reconciler/v1\nkind: Gauntlet\nmetadata: {name: smoke}\nspec:\n"
                "  metrics:\n    command: [python3, -c, 'print(\"{\\\"accuracy\\\": 1}\")']\n"
                "    rules: [{metric: accuracy, op: '>=', value: 0.5}]\n  timeout: 30s\n")
    made.write("gauntlet.yaml", gauntlet)
    model = made.repo / "desired-state" / "model.yaml"
    model.write_text(model.read_text() + "  gauntlet: smoke\n")
    made.commit("a gauntlet for the PR check")
    return made


@pytest.fixture
def server(fleet: Fleet, tmp_path: Path) -> Iterator[HttpGitServer]:
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(fleet.repo), str(served / "fleet.git")],
                   check=True, capture_output=True, timeout=60)
    with http_git_server(served, "deploy", TOKEN) as running:
        yield running


@pytest.fixture
def artifacts(tmp_path: Path) -> Iterator[str]:
    """Serves ``policy.bin`` only to a request carrying the token in its query."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            body = b"candidate weights"
            if self.path != f"/policy.bin?sig={TOKEN}":
                self.send_response(404)
                body = b""
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def settings_with(fleet: Fleet, repo_url: str) -> Path:
    path = fleet.settings_file.with_name("secret-reconciler.yaml")
    path.write_text(f"repo: {repo_url}\nstateDir: {fleet.state}\nlisten: 127.0.0.1:0\n")
    return path


def cli(settings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args, "--config", str(settings)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **GIT_ENV})


def assert_nowhere(state_dir: Path, *outputs: str) -> None:
    for output in outputs:
        assert TOKEN not in output, output
    files = [path for path in state_dir.rglob("*") if path.is_file()]
    assert files, "the state directory is empty: nothing was checked"
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), f"the token is in {path}"


@pytest.mark.slow
def test_a_planted_token_is_never_shown(fleet: Fleet, server: HttpGitServer, artifacts: str,
                                        tmp_path: Path) -> None:
    good = settings_with(fleet, server.url("fleet.git", userinfo=f"deploy:{TOKEN}@"))
    applied = cli(good, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    outputs = [applied.stdout, applied.stderr]
    for command in (("status",), ("status", "--output", "json"), ("history",),
                    ("history", "--output", "json"), ("plan",), ("validate",)):
        done = cli(good, *command)
        outputs += [done.stdout, done.stderr]
    missing = cli(good, "gauntlet", "policy", "--artifact",
                  f"{artifacts}/absent.bin?sig={TOKEN}")
    assert missing.returncode == 3, missing.stdout + missing.stderr  # an error, not a verdict
    assert f"{artifacts}/absent.bin" in missing.stdout + missing.stderr
    checked = cli(good, "gauntlet", "policy", "--artifact", f"{artifacts}/policy.bin?sig={TOKEN}")
    assert "sha256:" in checked.stdout + checked.stderr  # fetched: the token did work
    outputs += [missing.stdout, missing.stderr, checked.stdout, checked.stderr]

    wrong = settings_with(fleet, server.url("fleet.git", userinfo=f"deploy:x{TOKEN}@",
                                            query=f"?private_token={TOKEN}"))
    refused = cli(wrong, "apply")
    assert refused.returncode == 1 and "AuthenticationFailed" in refused.stdout + refused.stderr
    outputs += [refused.stdout, refused.stderr]
    daemon = DaemonProcess(wrong, fleet.state, tmp_path)
    try:
        ready = daemon.wait_ready(timeout=60)
        assert "AuthenticationFailed" in ready and f"127.0.0.1:{server.port}/fleet.git" in ready
        assert "stalled" in ready and "retrying in" not in ready, "a refusal is no outage"
        with urllib.request.urlopen(f"http://{daemon.address}/metrics", timeout=10) as response:
            outputs.append(response.read().decode())
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
    outputs += [daemon.log(), *daemon.messages]
    assert_nowhere(fleet.state, *outputs)
