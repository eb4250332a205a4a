"""A small JSON-over-HTTP client for forge APIs over ``bounded_http``: the proxy the
environment names (as for artifact downloads), one deadline for each whole request (a
server answering a byte at a time is cut off too, and so is a request under way when the
daemon stops), bounded response reads, no redirects followed, retries with backoff on
5xx, 429 and connection faults, and errors that never carry the token.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from reconciler.bounded_http import (
    ExchangeFailed,
    backoff_seconds,
    exchange,
    scrub,
    worth_retrying,
)
from reconciler.errors import StalledError, TransientError
from reconciler.redaction import redact
from reconciler.vocabulary import Reason

MAX_RESPONSE_BYTES = 1 << 20  # a forge's answer to one call is a few KiB
MAX_SHOWN_BYTES = 300  # of an error body, in a message
RETRIES = 3  # attempts after the first, for 5xx and connection faults
BACKOFF_SECONDS = 0.5  # doubled at each retry (the most a wait may be: full jitter)
BACKOFF_CAP_SECONDS = 8.0


class ForgeRefused(StalledError):
    """The forge said no (401/403: the token; 404: the repository; 422: the request):
    retrying the same request cannot help; a person must look."""

    reason = "ForgeRefused"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message,
                         reason=Reason.AUTHENTICATION_FAILED if status in (401, 403) else None)
        self.status = status


class ForgeUnavailable(TransientError):
    """5xx, a timeout, a refused connection: after the retries, try again later."""

    reason = "ForgeUnavailable"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any  # the decoded JSON


class JsonClient:
    """Requests against one API base URL. ``headers()`` is called per request (it reads the
    token file then); ``secret()`` lets every message be scrubbed of the token, whatever a
    server echoes back."""

    def __init__(self, base_url: str, name: str, *, timeout: float,
                 headers: Any, stop: threading.Event | None = None,
                 backoff_seconds: float = BACKOFF_SECONDS) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StalledError(f"forge url {redact(base_url)!r} is not an http(s) URL")
        # No userinfo: the token goes in a header, never in a URL.
        self._origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self._prefix = parts.path.rstrip("/")
        self._headers = headers
        self._timeout = timeout
        self._stop = stop or threading.Event()
        self._backoff = backoff_seconds
        self.name = name  # e.g. "github at https://api.github.com": what messages say
        self.shown = redact(base_url)

    def request(self, method: str, path: str, payload: Any = None) -> Response:
        """One call; 2xx answers are returned, 5xx and faults retried with backoff, anything
        else raised as :class:`ForgeRefused` with the forge's own words (bounded)."""
        headers: dict[str, str] = dict(self._headers())
        secrets = [value.split()[-1] for name, value in headers.items()
                   if name.lower() in ("authorization", "private-token") and value]
        body = None if payload is None else json.dumps(payload).encode()
        headers["Accept"] = headers.get("Accept", "application/json")
        headers["User-Agent"] = "reconciler"
        if body is not None:
            headers["Content-Type"] = "application/json"
        problem = ""
        for attempt in range(RETRIES + 1):
            if attempt and self._stop.wait(backoff_seconds(attempt, self._backoff,
                                                           BACKOFF_CAP_SECONDS)):
                break
            try:
                answer = exchange(method, self._origin + self._prefix + path, body=body,
                                  headers=headers, timeout=self._timeout,
                                  max_bytes=MAX_RESPONSE_BYTES, stop=self._stop)
            except ExchangeFailed as error:
                problem = f"timed out after {self._timeout:g}s" if error.timed_out \
                    else str(error)
                continue
            status, data = answer.status, answer.body
            if not answer.complete:
                problem = f"answered with more than {MAX_RESPONSE_BYTES} bytes"
                continue
            if 200 <= status < 300:
                try:
                    return Response(status, json.loads(data) if data.strip() else None)
                except ValueError:
                    raise ForgeUnavailable(scrub(
                        f"{self.name}: {method} {path} answered {status} with a body that is "
                        "not JSON", secrets)) from None
            said = _words(data)
            if worth_retrying(status):
                problem = f"answered {status}{': ' + said if said else ''}"
                continue
            raise ForgeRefused(scrub(
                f"{self.name}: {method} {path} answered {status}"
                f"{_HINTS.get(status, '')}{': ' + said if said else ''}", secrets),
                status=status)
        raise ForgeUnavailable(scrub(
            f"{self.name}: {method} {path} {problem} (after {RETRIES + 1} attempts)", secrets))


# What a person should check, by status: the forge's own words follow.
_HINTS = {401: " (the token in forge.tokenFile was refused: expired, revoked or mistyped)",
          403: " (the token lacks a permission or scope this call needs)",
          404: " (no such repository or commit, or the token cannot see it)",
          422: " (the forge refused the request as invalid)"}


def _words(data: bytes) -> str:
    """What the forge said, bounded: ``message`` and ``errors`` of a JSON error, else text."""
    try:
        decoded = json.loads(data)
    except ValueError:
        return data[:MAX_SHOWN_BYTES].decode(errors="replace").strip()
    if isinstance(decoded, dict):
        parts = [str(decoded.get(key)) for key in ("message", "error", "errors")
                 if decoded.get(key)]
        return "; ".join(parts)[:MAX_SHOWN_BYTES]
    return str(decoded)[:MAX_SHOWN_BYTES]
