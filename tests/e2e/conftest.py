"""The daemon as a subprocess against a small fleet, listening on a free port with a
webhook secret: what most end-to-end tests start from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import DaemonProcess, running
from tests.fleet import Fleet

SECRET = b"webhook-secret-for-tests"


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    made = Fleet(tmp_path)
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    made.settings_file.write_text(f"repo: {made.repo}\nstateDir: {made.state}\n"
                                  "listen: 127.0.0.1:0\nresync: 1h\n"
                                  "webhook: {secretFile: secret}\n")
    return made


@pytest.fixture
def daemon(fleet: Fleet, tmp_path: Path) -> Iterator[DaemonProcess]:
    with running(fleet.settings_file, fleet.state, tmp_path) as process:
        yield process
