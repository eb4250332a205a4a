"""A real Prometheus server (Debian's ``prometheus``) scraping a small exporter on
127.0.0.1 whose values the test drives, for analysis checks."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_INTERVAL = "200ms"

Samples = Callable[[], dict[str, float]]  # 'name{labels}' -> value, asked at each scrape


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def exporter(samples: Samples) -> Iterator[str]:
    """An exporter serving ``samples()`` as gauges at ``/metrics``; yields host:port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            lines = []
            for series, value in sorted(samples().items()):
                name = series.split("{")[0]
                lines += [f"# TYPE {name} gauge", f"{series} {value}"]
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, object]]:
        query = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=5) as answer:
            document = json.loads(answer.read())
        result: list[dict[str, object]] = document["data"]["result"]
        return result

    def wait_for(self, promql: str, value: float, within: float = 20.0) -> None:
        """Until the server holds ``value`` for ``promql`` (a scrape has happened): the
        test's inputs are in place before the daemon measures (not a timed assertion)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result and float(result[0]["value"][1]) == value:  # type: ignore[index]
                return
            time.sleep(0.1)
        raise AssertionError(f"Prometheus never saw {promql} == {value}")


@contextmanager
def prometheus(tmp_path: Path, targets: list[str]) -> Iterator[Prometheus]:
    """A Prometheus server scraping ``targets`` every 200 ms, on a free port."""
    if shutil.which(PROMETHEUS) is None:
        pytest.fail("prometheus is missing: scripts/test.sh installs Debian's prometheus")
    folder = tmp_path / "prometheus"
    folder.mkdir()
    config = folder / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "app", "static_configs": [{"targets": targets}]}]}))
    port = free_port()
    log = (folder / "log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("prometheus did not start: "
                                         + (folder / "log").read_text()[-2000:]) from None
                time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
