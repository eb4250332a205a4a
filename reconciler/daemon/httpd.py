"""The daemon's HTTP face: /metrics, /healthz, /readyz, the Git webhook and /gate.

The webhook follows GitHub's convention: ``X-Hub-Signature-256: sha256=<hmac>`` of the
raw body with a shared secret. A bad or missing signature is 401 and triggers nothing; a
body over the limit is refused (413) before it is read. ``POST /gate`` (signed the same
way) runs a model's gate on a revision for a pull request's check, without flipping, and
answers with the outcome as JSON: a CI needs no fleet credentials to ask.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.daemon.metrics import Metrics

MAX_WEBHOOK_BYTES = 1 << 20
Probe = Callable[[], tuple[bool, str]]
GateRequest = Callable[[dict[str, Any]], dict[str, Any]]


def parse_listen(address: str) -> tuple[str, int]:
    """``127.0.0.1:9464``, ``[::1]:9464``, ``:9464`` (all interfaces)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class ControlServer:
    def __init__(self, address: str, metrics: Metrics, healthy: Probe, ready: Probe,
                 webhook_secret: bytes | None, on_webhook: Callable[[], None],
                 on_gate: GateRequest | None = None) -> None:
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

            def _signed_body(self) -> bytes | None:
                """The body, if signed with the shared secret; None after answering why not."""
                if webhook_secret is None:
                    self._answer(404, b"disabled: no webhook secret configured\n")
                    return None
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self._answer(411, b"Content-Length required\n")
                    return None
                if length < 0 or length > MAX_WEBHOOK_BYTES:
                    self.close_connection = True
                    self._answer(413, b"payload too large\n")
                    return None
                body = self.rfile.read(length)
                expected = "sha256=" + hmac.new(webhook_secret, body, hashlib.sha256).hexdigest()
                given = self.headers.get("X-Hub-Signature-256", "")
                if not hmac.compare_digest(expected, given):
                    self._answer(401, b"bad signature\n")
                    return None
                return body

            def do_POST(self) -> None:
                if self.path not in ("/webhook", "/gate") or (
                        self.path == "/gate" and on_gate is None):
                    self._answer(404, b"not found\n")
                    return
                body = self._signed_body()
                if body is None:
                    return
                if self.path == "/webhook":
                    on_webhook()
                    self._answer(202, b"pass scheduled\n")
                    return
                try:
                    request = json.loads(body)
                except ValueError:
                    request = None
                if not isinstance(request, dict) or not isinstance(request.get("model"), str) \
                        or any(not isinstance(request.get(key, ""), str)
                               for key in ("rev", "artifact")):
                    self._answer(400, b"expected JSON: {model, rev?, artifact?}\n")
                    return
                assert on_gate is not None
                result = on_gate(request)
                self._answer(200, json.dumps(result).encode() + b"\n", "application/json")

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
