"""The example desired state, run by the daemon: a living fleet converges on staging."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Repo
from tests.e2e.daemon import DaemonProcess, stop_services, wait_until

MODEL_V2 = "f5129856856f88b7d9390dd7f1885eb33b0bd5c814f142e7b6ebc0efa9f17631"


pytestmark = pytest.mark.slow  # whole gauntlets and daemons; fast tests cover each step


@pytest.fixture
def example_daemon(repo: Repo, tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    settings = tmp_path / "reconciler.yaml"
    state = tmp_path / "state"
    settings.write_text(f"repo: {repo.path}\nstateDir: {state}\nlisten: 127.0.0.1:0\n")
    process = DaemonProcess(settings, state, tmp_path)
    try:
        yield process, state / "fleet"
    finally:
        if process.process.poll() is None:
            process.stop()
        stop_services(state / "fleet")


def test_the_example_converges_staging_with_a_real_service(
        example_daemon: tuple[DaemonProcess, Path]) -> None:
    daemon, fleet = example_daemon
    ready = daemon.wait_ready(timeout=60)
    staging = fleet / "staging"
    assert (staging / "bin" / "runner.py").exists()
    port = int((staging / "run" / "runner.port").read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        health = json.loads(answer.read())
    assert health["sampleDecision"] == "scale_up"
    assert health["config"]["max_instances_per_chute"] == 4
    # The model passed connect4-gate on CPU and is canonical on staging; production waits
    # for staging's 30-minute soak.
    pointer = staging / "models" / "canonical_connect4.pt"
    wait_until(pointer.is_symlink, timeout=60, what="the model's promotion")
    assert pointer.resolve().name == MODEL_V2
    # The gauntlet showed its progress on the systemd STATUS line and in the metrics.
    assert any(m.startswith("STATUS=gauntlet connect4-gate: heuristic score")
               for m in daemon.receive(0.5))
    with urllib.request.urlopen(f"http://{daemon.address}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    played = {line.split("{")[1].split('"')[1]: float(line.rsplit(" ", 1)[1])
              for line in metrics.splitlines()
              if line.startswith("reconciler_gauntlet_games_total{")}
    assert played["random"] > 0 and played["heuristic"] > 0
    assert not (fleet / "production" / "strategies").exists()
    assert "waiting" in ready or "changed" in ready


def test_the_rejection_demo_rejects_the_weak_policy_and_keeps_v2() -> None:
    import subprocess

    from tests.conftest import REPO_ROOT

    demo = subprocess.run([str(REPO_ROOT / "scripts" / "demo-rejection.sh")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "GateFailed: gate connect4-gate rejected" in demo.stdout
    assert f"canonical on staging: {MODEL_V2}" in demo.stdout
