"""One HTTP exchange with a server that may be slow or hostile (a forge's API, a
notification receiver), bounded in time and in size; and the retry policy both use.

The connection and the whole answer share one deadline: a watchdog shuts the socket down
when it passes, so a server that trickles its answer byte by byte (each byte within the
per-read timeout) cannot hold the caller longer. At most ``max_bytes`` of the answer are
read. Redirects are never followed (a token is never sent to a host it was not meant
for). Credentials in the URL (``https://user:pass@host``) become Basic auth.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import random
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from reconciler.redaction import redact_text

MIN_SECRET_CHARS = 4  # shorter is no secret worth scrubbing, and would garble the text


class ExchangeFailed(Exception):
    """No answer: a refused or reset connection, a TLS fault, or the deadline passed
    (``timed_out``). The message never holds the URL's credentials."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # at most max_bytes of it
    complete: bool  # False: the server sent more than max_bytes


def exchange(method: str, url: str, *, body: bytes | None, headers: Mapping[str, str],
             timeout: float, max_bytes: int) -> Answer:
    """Send one request to ``url`` and read its answer within ``timeout`` seconds in all.
    Raises ValueError for a URL that is not http(s), ExchangeFailed for no answer."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    sent = dict(headers)
    if parts.username is not None and not any(k.lower() == "authorization" for k in sent):
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        sent["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    expired = threading.Event()  # set before the socket is shut: the fault is the deadline

    def cut_off() -> None:
        expired.set()
        if connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout, cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read(max_bytes + 1)
        status = response.status
    except (OSError, http.client.HTTPException) as error:
        timed_out = expired.is_set() or isinstance(error, TimeoutError)
        raise ExchangeFailed(f"no answer within the timeout ({timeout:g}s)" if timed_out else
                             f"{type(error).__name__}: {redact_text(str(error))}",
                             timed_out=timed_out) from None
    finally:
        watchdog.cancel()
        connection.close()
    return Answer(status, data[:max_bytes], len(data) <= max_bytes)


def worth_retrying(status: int) -> bool:
    """5xx and 429 may pass; any other answer is final (a redirect is not followed, a 4xx
    says the request itself is wrong)."""
    return status >= 500 or status == 429


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Before retry number ``attempt`` (1, 2, …): exponential with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` (what a server said, an error) without ``secrets`` (a token the server may
    echo back) and without any URL's credentials."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, "***")
    return redact_text(text)
