"""An HTTP(S) connection for a URL, direct or through the proxy the environment names: the
one way the daemon's HTTP clients (artifact downloads, forge APIs) reach a server, so a site
whose egress goes through a proxy configures it once, as for every other tool."""

from __future__ import annotations

import http.client
import ssl
import urllib.request
from urllib.parse import urlsplit


def connection_for(url: str, timeout: float, context: ssl.SSLContext | None = None,
                   ) -> tuple[http.client.HTTPConnection, str]:
    """A connection for ``url`` and the request target: direct, or through the proxy the
    environment names (``http_proxy``, ``https_proxy``, ``no_proxy``, read as urllib does;
    https through a CONNECT tunnel). ``context``: how https servers are verified (default:
    the system's CAs; made only for https: loading the CAs costs ~40 ms of CPU)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, parts.port, timeout=timeout,
                                               context=_verifying(context)), path
        return http.client.HTTPConnection(host, parts.port, timeout=timeout), path
    via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme == "https":
        tunnel = http.client.HTTPSConnection(via.hostname or "", via.port or 80,
                                             timeout=timeout,
                                             context=_verifying(context))
        tunnel.set_tunnel(host, parts.port or 443)
        return tunnel, path
    return http.client.HTTPConnection(via.hostname or "", via.port or 80,
                                      timeout=timeout), url


def _verifying(context: ssl.SSLContext | None) -> ssl.SSLContext:
    return context or ssl.create_default_context()
