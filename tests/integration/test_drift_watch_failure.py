"""A drift watch that cannot start (a broken kubeconfig, an API that refuses) is logged and
left to the resync: it never ends the daemon's loop."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from reconciler.daemon.daemon import Daemon
from reconciler.desired.documents import Origin, Target, build
from reconciler.settings import load_settings


def test_a_drift_watch_that_cannot_start_is_logged_not_fatal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text(f"repo: {tmp_path}\nstateDir: {tmp_path / 'state'}\nlisten: ''\n")
    settings = load_settings(config, {})
    daemon = Daemon(config, {})

    def refused() -> object:
        raise OSError(111, "Connection refused")

    daemon._connections = refused  # type: ignore[assignment]
    target: Target = build("Target", {"metadata": {"name": "prod"}, "spec": {
        "kubernetes": {"context": "kmock", "namespace": "ml"}}}, Origin("t.yaml", "0", 0, 1))
    daemon._watch_for_drift(settings, (target,))  # returns: the loop goes on
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    said = " ".join(r.getMessage() for r in warnings)
    assert "drift watch unavailable (IOError:" in said and "Connection refused" in said
    assert "healed at the next resync" in said
