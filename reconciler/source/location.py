"""Telling a local repository path from a URL (pure)."""

from __future__ import annotations


def is_local_path(url: str) -> bool:
    """A plain path (not ``scheme://`` and not scp-like ``host:path``)."""
    if "://" in url:
        return False
    head = url.split("/", 1)[0]
    return ":" not in head
