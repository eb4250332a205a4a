"""Instant PromQL queries over HTTP (``/api/v1/query``): TLS with a CA file, a bearer token
read from its file at each query, a timeout, a bounded answer.

The server may be slow or hostile: every query has one deadline for the whole exchange (a
watchdog shuts the socket down, so an answer that trickles in byte by byte is cut off too),
ends within ``STOP_SLICE_SECONDS`` of its stop event being set, and reads at most
``MAX_ANSWER_BYTES``. Redirects are not followed: the token goes to the server named in the
settings and nowhere else. The token never appears in a message; URLs are shown redacted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any

from reconciler.http_connections import connection_for
from reconciler.redaction import redact
from reconciler.settings import PrometheusSettings

MAX_ANSWER_BYTES = 1 << 20
_MESSAGE_CHARS = 500
STOP_SLICE_SECONDS = 0.1  # how soon a query notices its stop event or deadline


class QueryError(Exception):
    """A query gave no number. ``fatal``: asking again cannot help (the server refused the
    query as malformed, or its answer cannot be one number)."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class PrometheusClient:
    def __init__(self, settings: PrometheusSettings) -> None:
        self._settings = settings
        self._endpoint = settings.url.rstrip("/") + "/api/v1/query"
        self._https = settings.url.startswith("https://")
        self._shown = redact(settings.url)
        self._context: ssl.SSLContext | None = None

    @property
    def shown(self) -> str:
        return self._shown

    def _connection(self) -> tuple[http.client.HTTPConnection, str]:
        if self._https and self._context is None:
            ca = self._settings.ca_file
            self._context = ssl.create_default_context(cafile=str(ca) if ca else None)
        return connection_for(self._endpoint, self._settings.timeout_seconds, self._context)

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "reconciler-analysis", "Accept": "application/json"}
        token_file = self._settings.bearer_token_file
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as error:
                raise QueryError(f"cannot read the Prometheus bearer token file "
                                 f"{token_file}: {error.strerror}") from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def query(self, promql: str, stop: threading.Event | None = None) -> float | None:
        """The query's one number now; None when it returned no series. Raises
        :class:`QueryError`, also when ``stop`` is set before the answer is in."""
        stop = stop or threading.Event()
        if stop.is_set():
            raise QueryError(f"the query to Prometheus at {self._shown} was stopped")
        body = urllib.parse.urlencode({"query": promql}).encode()
        headers = {**self._headers(), "Content-Type": "application/x-www-form-urlencoded"}
        connection, request_target = self._connection()
        finished = threading.Event()
        cut: list[str] = []
        watchdog = threading.Thread(target=self._watch, args=(connection, stop, finished, cut),
                                    name="prometheus query watchdog", daemon=True)
        watchdog.start()
        try:
            connection.request("POST", request_target, body=body, headers=headers)
            response = connection.getresponse()
            status, reason = response.status, response.reason
            answer = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as error:
            if not cut:
                raise QueryError(f"Prometheus at {self._shown} is unreachable: {error}") \
                    from None
        finally:
            finished.set()
            connection.close()
        if cut:  # whatever was read before the socket was shut down is not the answer
            raise QueryError(f"the query to Prometheus at {self._shown} {cut[0]}")
        if 300 <= status < 400:
            raise QueryError(f"Prometheus at {self._shown} answered {status} {reason}: "
                             "redirects are not followed (the bearer token goes only to "
                             "analysis.prometheus.url); set the URL it redirects to")
        # Prometheus explains 400, 422 and 503 in JSON.
        if status >= 300 and status not in (400, 422, 503):
            raise QueryError(f"Prometheus at {self._shown} answered {status} {reason}")
        if len(answer) > MAX_ANSWER_BYTES:
            raise QueryError(f"Prometheus at {self._shown} answered more than "
                             f"{MAX_ANSWER_BYTES} bytes: aggregate the query", fatal=True)
        return _number(answer, self._shown)

    def _watch(self, connection: http.client.HTTPConnection, stop: threading.Event,
               finished: threading.Event, cut: list[str]) -> None:
        """Shut the query's socket down at its deadline or when ``stop`` is set."""
        timeout = self._settings.timeout_seconds
        deadline = time.monotonic() + timeout
        while not finished.wait(STOP_SLICE_SECONDS):
            if stop.is_set():
                cut.append("was stopped")
            elif time.monotonic() >= deadline:
                cut.append(f"timed out after {timeout:g}s")
            else:
                continue
            if connection.sock is not None:
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)
            return


def _number(answer: bytes, shown: str) -> float | None:
    try:
        document = json.loads(answer)
    except ValueError:
        raise QueryError(f"Prometheus at {shown} did not answer JSON") from None
    if not isinstance(document, dict):
        raise QueryError(f"Prometheus at {shown} answered an unexpected document")
    if document.get("status") != "success":
        kind = str(document.get("errorType", "error"))
        message = str(document.get("error", "no message"))[:_MESSAGE_CHARS]
        # bad_data: the query itself is wrong; a new commit must fix it.
        raise QueryError(f"Prometheus refused the query ({kind}): {message}",
                         fatal=kind == "bad_data")
    data = document.get("data")
    if not isinstance(data, dict):
        raise QueryError(f"Prometheus at {shown} answered without data")
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        return _sample(result)
    if result_type != "vector" or not isinstance(result, list):
        raise QueryError(f"the query returned a {result_type}, not one number: use an instant "
                         "vector or a scalar", fatal=True)
    if not result:
        return None
    if len(result) > 1:
        raise QueryError(f"the query returned {len(result)} series, not one: aggregate them "
                         "(sum, max, avg ...)", fatal=True)
    series = result[0]
    return _sample(series.get("value") if isinstance(series, dict) else None)


def _sample(pair: Any) -> float | None:
    if not isinstance(pair, list) or len(pair) != 2:
        raise QueryError("the answer holds no sample")
    try:
        value = float(pair[1])
    except (TypeError, ValueError):
        raise QueryError(f"the sample {pair[1]!r} is not a number") from None
    return None if math.isnan(value) else value
