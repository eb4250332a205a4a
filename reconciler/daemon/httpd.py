"""The daemon's HTTP face: /metrics, /healthz, /readyz, the Git webhook, /gate and /plan.

The webhook takes GitHub's ``X-Hub-Signature-256: sha256=<hmac>`` of the raw body with a
shared secret, or GitLab's ``X-Gitlab-Token: <secret>``; both are compared in constant
time. A bad or missing signature is 401 and triggers nothing; a body over the limit is
refused (413) before it is read. ``POST /gate`` (signed the same way) runs a model's gate
on a revision for a pull request's check, without flipping, and answers with the outcome
as JSON: a CI needs no fleet credentials to ask. ``POST /plan`` (signed the same way,
``{"rev": REV}``, at most ``MAX_PLAN_BYTES``) answers with the plan of that revision against
the live fleet, the JSON of ``reconciler plan --output json``: what a pull request would do.

Anyone who can reach the port can open connections and say nothing, so the listener
bounds what they cost: each connection has a timeout per read, and past
``max_connections`` a new connection evicts the oldest one still waiting for its request
(rather than being refused: a probe always gets in). The daemon's descriptors are never
spent by clients, so a pass never dies of EMFILE. A client's fault (a reset, a timeout)
is one log line, and at most a few a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.daemon.metrics import Metrics

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1 << 20
MIN_SECRET_BYTES = 16
MAX_CONNECTIONS = 256
CONNECTION_TIMEOUT_SECONDS = 10.0
ERROR_LINES_PER_MINUTE = 5
Probe = Callable[[], tuple[bool, str]]
GateRequest = Callable[[dict[str, Any]], dict[str, Any]]
MAX_PLAN_BYTES = 4096  # {"rev": ...}: anything longer is not a plan request
PlanRequest = Callable[[str], tuple[int, bytes]]  # a revision -> (status, JSON body)


def parse_listen(address: str) -> tuple[str, int]:
    """``127.0.0.1:9464``, ``[::1]:9464``, ``:9464`` (all interfaces)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def webhook_authentic(secret: bytes, body: bytes, github_signature: str | None,
                      gitlab_token: str | None) -> bool:
    """GitHub's HMAC of the body, or GitLab's token; constant-time either way."""
    if github_signature is not None:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), github_signature.encode())
    if gitlab_token is not None:
        return hmac.compare_digest(secret, gitlab_token.encode())
    return False


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them waiting for a request."""

    daemon_threads = True
    request_queue_size = 1024  # a flood waits in the kernel's queue, not in our descriptors

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_connections: int) -> None:
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._open: OrderedDict[socket.socket, bool] = OrderedDict()  # -> busy, oldest first
        self._errors_shown = 0
        self._errors_hidden = 0
        self._errors_since = time.monotonic()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            while len(self._open) >= self.max_connections:
                idle = next((s for s, busy in self._open.items() if not busy), None)
                if idle is None:
                    break  # every one is being answered: they end by themselves
                del self._open[idle]
                with contextlib.suppress(OSError):  # its reader wakes up to an end of file
                    idle.shutdown(socket.SHUT_RDWR)
            self._open[request] = False
        super().process_request(request, client_address)

    def mark(self, connection: socket.socket, busy: bool) -> None:
        with self._lock:
            if connection in self._open:
                self._open[connection] = busy

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line per error, a few a minute, never a traceback: clients cannot flood the
        log."""
        error = sys.exc_info()[1]
        now = time.monotonic()
        with self._lock:
            if now - self._errors_since > 60:
                if self._errors_hidden:
                    log.warning(f"http: {self._errors_hidden} more client errors in the "
                                "last minute not shown")
                self._errors_since, self._errors_shown, self._errors_hidden = now, 0, 0
            if self._errors_shown >= ERROR_LINES_PER_MINUTE:
                self._errors_hidden += 1
                return
            self._errors_shown += 1
        host = client_address[0] if isinstance(client_address, tuple) else client_address
        log.warning(f"http: {host}: {type(error).__name__}: {error}")


class ControlServer:
    def __init__(self, address: str, metrics: Metrics, healthy: Probe, ready: Probe,
                 webhook_secret: bytes | None, on_webhook: Callable[[], None],
                 on_gate: GateRequest | None = None, on_plan: PlanRequest | None = None, *,
                 max_connections: int = MAX_CONNECTIONS,
                 connection_timeout: float = CONNECTION_TIMEOUT_SECONDS) -> None:
        def server() -> _Server:
            return self._http

        class Handler(BaseHTTPRequestHandler):
            server_version = "reconciler"
            timeout = connection_timeout  # per read and write on the connection

            def log_message(self, format: str, *args: object) -> None:
                pass  # requests are not worth a journal line each

            def parse_request(self) -> bool:
                # Busy only once the headers are in: a client that trickles them stays
                # idle, so it is evicted like any other idle connection.
                parsed = super().parse_request()
                server().mark(self.connection, True)
                return parsed

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

            def _signed_body(self, limit: int = MAX_WEBHOOK_BYTES) -> bytes | None:
                """The body, if signed with the shared secret; None after answering why not."""
                if webhook_secret is None:
                    self._answer(404, b"disabled: no webhook secret configured\n")
                    return None
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self._answer(411, b"Content-Length required\n")
                    return None
                if length < 0 or length > limit:
                    self.close_connection = True
                    self._answer(413, b"payload too large\n")
                    return None
                server().mark(self.connection, False)  # a slow body may be evicted
                body = self.rfile.read(length)
                server().mark(self.connection, True)
                if not webhook_authentic(webhook_secret, body,
                                         self.headers.get("X-Hub-Signature-256"),
                                         self.headers.get("X-Gitlab-Token")):
                    self._answer(401, b"bad signature\n")
                    return None
                return body

            def _plan(self, body: bytes) -> None:
                try:
                    request = json.loads(body)
                except ValueError:
                    request = None
                rev = request.get("rev") if isinstance(request, dict) else None
                if not isinstance(rev, str) or not rev or rev.startswith("-"):
                    self._answer(400, b'expected JSON: {"rev": "<branch, tag or sha>"}\n')
                    return
                assert on_plan is not None
                status, answer = on_plan(rev)
                self._answer(status, answer, "application/json")

            def do_POST(self) -> None:
                if self.path not in ("/webhook", "/gate", "/plan") or (
                        self.path == "/gate" and on_gate is None) or (
                        self.path == "/plan" and on_plan is None):
                    self._answer(404, b"not found\n")
                    return
                body = self._signed_body(MAX_PLAN_BYTES if self.path == "/plan"
                                         else MAX_WEBHOOK_BYTES)
                if body is None:
                    return
                if self.path == "/plan":
                    self._plan(body)
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

        self._http = _Server(parse_listen(address), Handler, max_connections)
        self._thread = threading.Thread(target=self._http.serve_forever, name="http",
                                        daemon=True)

    @property
    def address(self) -> str:
        host, port = self._http.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else host
        return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"

    def open_connections(self) -> int:
        return self._http.open_connections()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
