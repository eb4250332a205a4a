"""Instant PromQL queries over HTTP (``/api/v1/query``): TLS with a CA file, a bearer token
read from its file at each query, a timeout, a bounded answer.

The server may be slow or hostile: every query has a deadline and reads at most
``MAX_ANSWER_BYTES``. The token never appears in a message; URLs are shown redacted.
"""

from __future__ import annotations

import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

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
        self._shown = redact(settings.url)
        self._context: ssl.SSLContext | None = None

    @property
    def shown(self) -> str:
        return self._shown

    def _tls(self) -> ssl.SSLContext | None:
        if not self._endpoint.startswith("https://"):
            return None
        if self._context is None:
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

    def query(self, promql: str) -> float | None:
        """The query's one number now; None when it returned no series. Raises
        :class:`QueryError`."""
        body = urllib.parse.urlencode({"query": promql}).encode()
        request = urllib.request.Request(self._endpoint, data=body, headers={
            **self._headers(), "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=self._settings.timeout_seconds,
                                        context=self._tls()) as response:
                answer = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            answer = error.read(MAX_ANSWER_BYTES + 1)
            if error.code not in (400, 422, 503):  # Prometheus explains those in JSON
                raise QueryError(f"Prometheus at {self._shown} answered {error.code} "
                                 f"{error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise QueryError(f"Prometheus at {self._shown} is unreachable: {reason}") from None
        if len(answer) > MAX_ANSWER_BYTES:
            raise QueryError(f"Prometheus at {self._shown} answered more than "
                             f"{MAX_ANSWER_BYTES} bytes: aggregate the query", fatal=True)
        return _number(answer, self._shown)


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
