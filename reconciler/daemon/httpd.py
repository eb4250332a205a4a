"""The daemon's HTTP face: /metrics, /healthz, /readyz and the Git webhook.

The webhook follows GitHub's convention: ``X-Hub-Signature-256: sha256=<hmac>`` of the
raw body with a shared secret. A bad or missing signature is 401 and triggers nothing; a
body over the limit is refused (413) before it is read.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.daemon.metrics import Metrics

MAX_WEBHOOK_BYTES = 1 << 20
Probe = Callable[[], tuple[bool, str]]


def parse_listen(address: str) -> tuple[str, int]:
    """``127.0.0.1:9464``, ``[::1]:9464``, ``:9464`` (all interfaces)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class ControlServer:
    def __init__(self, address: str, metrics: Metrics, healthy: Probe, ready: Probe,
                 webhook_secret: bytes | None, on_webhook: Callable[[], None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            server_version = "reconciler"

            def log_message(self, format: str, *args: object) -> None:
                pass  # requests are not worth a journal line each

            def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._answer(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
                elif self.path in ("/healthz", "/readyz"):
                    ok, detail = (healthy if self.path == "/healthz" else ready)()
                    self._answer(200 if ok else 503, (detail + "\n").encode())
                else:
                    self._answer(404, b"not found\n")

            def do_POST(self) -> None:
                if self.path != "/webhook":
                    self._answer(404, b"not found\n")
                    return
                if webhook_secret is None:
                    self._answer(404, b"webhook disabled: no secret configured\n")
                    return
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self._answer(411, b"Content-Length required\n")
                    return
                if length < 0 or length > MAX_WEBHOOK_BYTES:
                    self.close_connection = True
                    self._answer(413, b"payload too large\n")
                    return
                body = self.rfile.read(length)
                expected = "sha256=" + hmac.new(webhook_secret, body, hashlib.sha256).hexdigest()
                given = self.headers.get("X-Hub-Signature-256", "")
                if not hmac.compare_digest(expected, given):
                    self._answer(401, b"bad signature\n")
                    return
                on_webhook()
                self._answer(202, b"pass scheduled\n")

        self._http = ThreadingHTTPServer(parse_listen(address), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="http",
                                        daemon=True)

    @property
    def address(self) -> str:
        host, port = self._http.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else host
        return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
