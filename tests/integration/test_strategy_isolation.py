"""Strategy checks run repository code in isolation: no secrets, no survivors, no spill."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler.cli import main
from tests.conftest import example_copy, survivors


def _strategy(folder: Path, source: str, timeout: str = "60s") -> None:
    (folder / "strategies" / "gepetto.py").write_text(source)
    spec = folder / "strategies" / "gepetto.yaml"
    text = spec.read_text().replace("checkTimeout: 60s", f"checkTimeout: {timeout}")
    spec.write_text(text.replace("  tests:\n    - strategies/test_gepetto.py\n", ""))


def test_daemon_environment_does_not_reach_repository_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RECONCILER_WEBHOOK_SECRET", "hunter2")
    folder = example_copy(tmp_path)
    _strategy(folder, "import os\nleaked = sorted(k for k in os.environ if 'SECRET' in k)\n"
                      "assert not leaked, f'daemon environment leaked: {leaked}'\n"
                      "def select_chutes():\n    return []\n")
    assert main(["validate", str(folder)]) == 0, capsys.readouterr().out


def test_import_that_hangs_is_killed_with_every_process_it_started(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = example_copy(tmp_path)
    marker = f"3000.{os.getpid()}1"  # a sleep argument no other process has
    _strategy(folder, "import subprocess, time\n"
                      f"helper = subprocess.Popen(['sleep', '{marker}'])\n"
                      "time.sleep(300)\n", timeout="2s")
    started = time.monotonic()
    assert main(["validate", str(folder)]) == 1
    assert time.monotonic() - started < 30
    assert "[strategy-import-timeout]" in capsys.readouterr().out
    assert survivors(marker) == []


def test_chatty_import_is_reported_without_its_output(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = example_copy(tmp_path)
    _strategy(folder, "for _ in range(200):\n    print('x' * 100_000)\n"
                      "raise ValueError('thresholds missing')\n")
    assert main(["validate", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "raised ValueError: thresholds missing [strategy-import]" in out
    assert len(out) < 2000


def test_strategy_may_import_its_sibling_modules(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = example_copy(tmp_path)
    (folder / "strategies" / "margins.py").write_text("FLOOR = 0.5\n")
    _strategy(folder, "from margins import FLOOR\n\ndef select_chutes():\n    return FLOOR\n")
    assert main(["validate", str(folder)]) == 0, capsys.readouterr().out
