"""The HTTP probe of health checks and analysis checks: one GET, its status against the one
expected, within a timeout."""

from __future__ import annotations

import urllib.error
import urllib.request


def probe_http(url: str, expect_status: int, timeout: float) -> tuple[bool, str]:
    """One GET: (the status was the one expected, what happened)."""
    request = urllib.request.Request(url, headers={"User-Agent": "reconciler-probe"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        return False, f"GET {url}: {getattr(error, 'reason', error)}"
    if status != expect_status:
        return False, f"GET {url} answered {status}, expected {expect_status}"
    return True, f"GET {url} answered {status}"
