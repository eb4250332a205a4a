"""One receiver's delivery: a bounded queue, a thread, a token bucket, retries, bounded HTTP.

The pass only ever appends to the queue (constant time, never a wait on the network). A
full queue drops its oldest event and counts it. The thread takes a token before each
delivery (the rate limit waits, it does not drop), posts with a timeout on the connection
and on the whole answer (a watchdog shuts the socket down: a receiver that trickles its
answer byte by byte cannot hold the thread longer), reads at most ``MAX_ANSWER_BYTES`` of
it, and retries 5xx, 429, timeouts and refused connections with exponential backoff and
full jitter; any other 4xx is a final answer (the request is wrong; retrying cannot help).
Redirects are not followed: a bearer token is never sent to a host it was not meant for.
What is logged names the receiver, never its URL.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from reconciler.notify.payloads import Message
from reconciler.redaction import redact_text

MAX_ANSWER_BYTES = 64 << 10
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
USER_AGENT = "reconciler-notify"
log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class TokenBucket:
    """``per_minute`` tokens a minute, at most ``burst`` saved up."""

    def __init__(self, per_minute: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def wait_time(self) -> float:
        """Seconds until a token is there (0: take it now)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate

    def take(self) -> None:
        self._tokens -= 1


def post(url: str, message: Message, *, timeout: float, bearer: str | None = None) -> int:
    """POST ``message`` to ``url``; the status. Raises DeliveryFailed for a 4xx/5xx answer
    or a network fault (retryable: 5xx, 429, timeouts, connection faults)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryFailed("not an http(s) URL", retryable=False)
    headers = {"Content-Type": message.content_type, "User-Agent": USER_AGENT,
               "Content-Length": str(len(message.body))}
    if parts.username is not None:
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def cut_off() -> None:  # the whole exchange has one deadline, however it trickles
        if connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout, cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", path, body=message.body, headers=headers)
        response = connection.getresponse()
        answer = response.read(MAX_ANSWER_BYTES)
        status = response.status
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as error:
        expired = not watchdog.is_alive()
        shown = "no answer within the timeout" if expired or isinstance(error, TimeoutError) \
            else f"{type(error).__name__}: {redact_text(str(error))}"
        raise DeliveryFailed(shown, retryable=True) from None
    finally:
        watchdog.cancel()
        connection.close()
    if status >= 400:
        said = answer[:200].decode(errors="replace").strip()
        raise DeliveryFailed(f"HTTP {status}" + (f": {redact_text(said)}" if said else ""),
                             retryable=status >= 500 or status == 429)
    return status


class Worker:
    """A receiver's queue and the thread that empties it."""

    def __init__(self, name: str, kind: str, send: Callable[[Message], None], *,
                 queue_size: int, per_minute: float, burst: int, max_attempts: int,
                 result: Callable[[str, str], None],
                 resend: Callable[[float], Message | None] | None = None,
                 resend_seconds: float = 0.0,
                 log: Callable[[str], None] = log.warning) -> None:
        self.name, self.kind = name, kind
        self._send = send
        self._queue: deque[Callable[[], Message | None]] = deque()
        self._size = queue_size
        self._bucket = TokenBucket(per_minute, burst)
        self._attempts = max_attempts
        self._result = result
        self._resend = resend
        self._resend_seconds = resend_seconds
        self._resend_due = time.monotonic() + resend_seconds
        self._log = log
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"notify-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, render: Callable[[], Message | None]) -> None:
        """Queue a delivery (rendered on the worker's thread); never waits."""
        with self._ready:
            if len(self._queue) >= self._size:
                self._queue.popleft()
                self._result(self.kind, "dropped")
            self._queue.append(render)
            self._ready.notify()

    def pending(self) -> int:
        with self._ready:
            return len(self._queue)

    def stop(self, grace: float = 1.0) -> None:
        """End the thread within about ``grace`` seconds, whatever the receiver does."""
        self._stop.set()
        with self._ready:
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(grace)
        left = self.pending()
        if left:
            self._log(f"notify: receiver {self.name} ({self.kind}): {left} undelivered "
                      "event(s) dropped at stop")

    def _next(self) -> Callable[[], Message | None] | None:
        """The next queued delivery, or None when a resend is due or the worker stops."""
        with self._ready:
            while not self._queue and not self._stop.is_set():
                wait = None if self._resend is None else self._resend_due - time.monotonic()
                if wait is not None and wait <= 0:
                    self._resend_due = time.monotonic() + self._resend_seconds
                    return None
                self._ready.wait(wait)
            return None if self._stop.is_set() else self._queue.popleft()

    def _run(self) -> None:
        while not self._stop.is_set():
            render = self._next()
            if self._stop.is_set():
                return
            try:
                message = render() if render is not None else (
                    self._resend(time.time()) if self._resend is not None else None)
            except Exception as error:  # a defect in a payload never ends the thread
                self._log(f"notify: receiver {self.name} ({self.kind}): cannot render an "
                          f"event: {type(error).__name__}: {error}")
                continue
            if message is not None:
                self._deliver(message)

    def _deliver(self, message: Message) -> None:
        for attempt in range(1, self._attempts + 1):
            wait = self._bucket.wait_time()
            while wait > 0:
                if self._stop.wait(wait):
                    return
                wait = self._bucket.wait_time()
            self._bucket.take()
            try:
                self._send(message)
            except DeliveryFailed as error:
                if not error.retryable or attempt == self._attempts:
                    self._result(self.kind, "failed")
                    self._log(f"notify: receiver {self.name} ({self.kind}): not delivered "
                              f"after {attempt} attempt(s): {error}")
                    return
                self._result(self.kind, "retried")
                delay = random.uniform(0, min(BACKOFF_CAP_SECONDS,
                                              BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))
                if self._stop.wait(delay):
                    return
                continue
            self._result(self.kind, "delivered")
            return
