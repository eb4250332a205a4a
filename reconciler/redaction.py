"""Showing a URL without its secrets (pure; the bottom layer, so every layer can use it).

Promise 6: secrets never reach Git, logs, metrics, status or the journal. A URL may carry
them in its userinfo (``https://user:token@host/...``) or its query (a presigned
``?X-Amz-Signature=...``). :func:`redact` is what every boundary that prints a repository or
artifact URL calls; :func:`redact_text` scrubs the URLs inside free text (a library's error
message) where text leaves the daemon: the error classifier, the journal, the STATUS line,
the log and ``daemon.json``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# An Authorization header quoted in text (a server echoing the request in its error, a
# command line): its credentials go, its scheme stays (``Authorization: Bearer <redacted>``).
_AUTHORIZATION_IN_TEXT = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|token|digest|negotiate)\s+)?)[^\s\"',;}]+")


def redact(url: str) -> str:
    """``url`` without userinfo, query or fragment: safe to print, journal or export.

    A local path or an scp-like ``user@host:path`` (the user of an SSH remote is not a
    secret) is returned as it is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:  # unparsable (a bad port, a bracket): show only the scheme
        return url.split("://", 1)[0] + "://<redacted>"


def redact_text(text: str) -> str:
    """Every URL inside ``text`` redacted, and the credentials of any Authorization header
    it quotes (for messages made from a library's errors or a server's answer)."""
    text = _URL_IN_TEXT.sub(lambda match: redact(match.group(0)), text)
    return _AUTHORIZATION_IN_TEXT.sub(r"\1<redacted>", text)
