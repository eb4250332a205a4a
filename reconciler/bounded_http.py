"""One HTTP exchange with a server that may be slow or hostile (a forge's API, a
notification receiver), bounded in time and in size; and the retry policy both use.

The connection and the whole answer share one deadline: a cut-off thread shuts the socket
down when it passes (or when ``stop`` is set, within ``CUT_OFF_POLL_SECONDS``), so a
server that trickles its answer byte by byte (each byte within the per-read timeout)
cannot hold the caller longer, and an answer cut short is never taken for one. At most
``max_bytes`` of the answer are read. Redirects are never followed (a token is never sent
to a host it was not meant for). Credentials in the URL (``https://user:pass@host``)
become Basic auth, never part of a request line. Connections go direct or through the
proxy the environment names (``http_connections``).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from reconciler.http_connections import connection_for
from reconciler.redaction import redact_text

MIN_SECRET_CHARS = 4  # shorter is no secret worth scrubbing, and would garble the text
CUT_OFF_POLL_SECONDS = 0.1


class ExchangeFailed(Exception):
    """No answer: a refused or reset connection, a TLS fault, the deadline passed
    (``timed_out``) or a stop. The message never holds the URL's credentials."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # at most max_bytes of it
    complete: bool  # False: the server sent more than max_bytes


def exchange(method: str, url: str, *, body: bytes | None, headers: Mapping[str, str],
             timeout: float, max_bytes: int, stop: threading.Event | None = None,
             context: ssl.SSLContext | None = None) -> Answer:
    """Send one request to ``url`` and read its answer within ``timeout`` seconds in all.
    ``context``: how an https server is verified (default: the system's CAs).
    Raises ValueError for a URL that is not http(s), ExchangeFailed for no answer."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    sent = dict(headers)
    if parts.username is not None and not any(k.lower() == "authorization" for k in sent):
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        sent["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], fragment=""))
    deadline = time.monotonic() + timeout
    connection, target = connection_for(bare, timeout, context)
    done, fired = threading.Event(), threading.Event()
    stopped = False

    def cut_off(sock: socket.socket) -> None:
        # The socket is kept here: the connection forgets it once an answer's headers say
        # it will close, and the body may still trickle after that.
        nonlocal stopped
        while not done.wait(CUT_OFF_POLL_SECONDS):
            stopped = stop is not None and stop.is_set()
            if stopped or time.monotonic() >= deadline:
                fired.set()
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return

    watcher: threading.Thread | None = None
    try:
        connection.connect()  # bounded by the timeout; the cut-off needs the socket
        watcher = threading.Thread(target=cut_off, args=(connection.sock,),
                                   name="http-cut-off", daemon=True)
        watcher.start()
        connection.request(method, target, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read(max_bytes + 1)
        status = response.status
        if fired.is_set():  # a read cut off short may return what it had: not an answer
            raise TimeoutError
    # OSError first: a certificate that fails verification is a ValueError too, and must
    # be named as what it is.
    except (OSError, http.client.HTTPException) as error:
        timed_out = fired.is_set() or isinstance(error, TimeoutError)
        raise ExchangeFailed("stopped before an answer" if stopped else
                             f"no answer within the timeout ({timeout:g}s)" if timed_out else
                             f"{type(error).__name__}: {redact_text(str(error))}",
                             timed_out=timed_out and not stopped) from None
    except ValueError:  # http.client's own message would quote the header, token and all
        raise ExchangeFailed("a header or the URL holds a character HTTP does not allow",
                             timed_out=False) from None
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
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
