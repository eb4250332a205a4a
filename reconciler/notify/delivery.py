"""One receiver's delivery: a bounded queue, a thread, a token bucket, retries.

The pass only ever appends to the queue (constant time, never a wait on the network). A
full queue drops its oldest event and counts it. The thread takes a token before each
delivery (the rate limit waits, it does not drop), posts through ``bounded_http`` (one
deadline for the connection and the whole answer, at most ``MAX_ANSWER_BYTES`` of it
read, redirects not followed: a bearer token is never sent to a host it was not meant
for, and a 3xx is not a delivery), and retries 5xx, 429, timeouts and refused connections
with exponential backoff and full jitter; any other 4xx is a final answer (the request is
wrong; retrying cannot help). What is logged names the receiver, never its URL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from reconciler.bounded_http import (
    ExchangeFailed,
    backoff_seconds,
    exchange,
    scrub,
    worth_retrying,
)
from reconciler.notify.payloads import Message

MAX_ANSWER_BYTES = 64 << 10
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
USER_AGENT = "reconciler-notify"
PATH_SECRET_CHARS = 8  # a path segment this long may be a token (Slack: /services/T/B/SECRET)
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


def post(url: str, message: Message, *, timeout: float, bearer: str | None = None,
         stop: threading.Event | None = None) -> int:
    """POST ``message`` to ``url``; the status. Raises DeliveryFailed for a 3xx/4xx/5xx
    answer or a network fault (retryable: 5xx, 429, timeouts, connection faults)."""
    headers = {"Content-Type": message.content_type, "User-Agent": USER_AGENT,
               "Content-Length": str(len(message.body))}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    try:
        answer = exchange("POST", url, body=message.body, headers=headers, timeout=timeout,
                          max_bytes=MAX_ANSWER_BYTES, stop=stop)
    except ValueError as error:
        raise DeliveryFailed(str(error), retryable=False) from None
    except ExchangeFailed as error:
        raise DeliveryFailed(str(error), retryable=True) from None
    status = answer.status
    if 300 <= status < 400:  # not followed, so not delivered: the same POST would be again
        raise DeliveryFailed(f"HTTP {status}: a redirect, not followed (point the receiver's "
                             "URL at where it leads)", retryable=False)
    if status >= 400:
        said = scrub(answer.body.decode(errors="replace"), _secrets(url, bearer)).strip()
        raise DeliveryFailed(f"HTTP {status}" + (f": {said[:200]}" if said else ""),
                             retryable=worth_retrying(status))
    return status


def _secrets(url: str, bearer: str | None) -> list[str]:
    """What a receiver may echo back of the request that must never be logged: the bearer
    token, the URL's password and query values, and its longer path segments (a Slack
    webhook's path is its secret)."""
    parts = urlsplit(url)
    found = [bearer or "", unquote(parts.password or "")]
    found += [value for _, value in parse_qsl(parts.query)]
    found += [unquote(segment) for segment in parts.path.split("/")
              if len(segment) >= PATH_SECRET_CHARS]
    return found


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

    @property
    def stopping(self) -> threading.Event:
        """Set at stop: a delivery under way ends with it."""
        return self._stop

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
                if self._stop.wait(backoff_seconds(attempt, BACKOFF_BASE_SECONDS,
                                                   BACKOFF_CAP_SECONDS)):
                    return
                continue
            self._result(self.kind, "delivered")
            return
