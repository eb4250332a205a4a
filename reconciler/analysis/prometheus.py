"""Instant PromQL queries over HTTP (``/api/v1/query``): TLS with a CA file, a bearer token
read from its file at each query, a timeout, a bounded answer.

The server may be slow or hostile: every query is one ``bounded_http.exchange``, with one
deadline for the whole exchange (an answer that trickles in byte by byte is cut off too),
ended soon after its stop event is set, reading at most ``MAX_ANSWER_BYTES``. Redirects
are not followed: the token goes to the server named in the settings and nowhere else. The
token never appears in a message; URLs are shown redacted.
"""

from __future__ import annotations

import json
import math
import ssl
import threading
import urllib.parse
from typing import Any

from reconciler.bounded_http import ExchangeFailed, exchange
from reconciler.redaction import redact
from reconciler.settings import PrometheusSettings

MAX_ANSWER_BYTES = 1 << 20
_MESSAGE_CHARS = 500


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

    def _tls(self) -> ssl.SSLContext | None:
        """The settings' CA file for https (made once: loading CAs costs ~40 ms of CPU)."""
        if self._https and self._context is None:
            ca = self._settings.ca_file
            self._context = ssl.create_default_context(cafile=str(ca) if ca else None)
        return self._context

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
        timeout = self._settings.timeout_seconds
        try:
            # One bounded exchange (bounded_http): a deadline for the whole answer, the stop
            # event, at most MAX_ANSWER_BYTES read, no redirect followed.
            answer = exchange("POST", self._endpoint, body=body, headers=headers,
                              timeout=timeout, max_bytes=MAX_ANSWER_BYTES, stop=stop,
                              context=self._tls())
        except ExchangeFailed as error:
            raise QueryError(f"the query to Prometheus at {self._shown} was stopped"
                             if stop.is_set() else
                             f"the query to Prometheus at {self._shown} timed out after "
                             f"{timeout:g}s" if error.timed_out else
                             f"Prometheus at {self._shown} is unreachable: {error}") from None
        status = answer.status
        if 300 <= status < 400:
            raise QueryError(f"Prometheus at {self._shown} answered {status}: redirects are "
                             "not followed (the bearer token goes only to "
                             "analysis.prometheus.url); set the URL it redirects to")
        # Prometheus explains 400, 422 and 503 in JSON.
        if status >= 300 and status not in (400, 422, 503):
            raise QueryError(f"Prometheus at {self._shown} answered {status}")
        if not answer.complete:
            raise QueryError(f"Prometheus at {self._shown} answered more than "
                             f"{MAX_ANSWER_BYTES} bytes: aggregate the query", fatal=True)
        return _number(answer.body, self._shown)


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
