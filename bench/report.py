"""How every benchmark ends: its numbers as JSON, then each target as PASS or FAIL."""

from __future__ import annotations

import json


def finish(results: dict[str, object], checks: dict[str, bool]) -> int:
    """Print, and return the exit code: 0 when every target is met."""
    print(json.dumps(results, indent=2))
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1
