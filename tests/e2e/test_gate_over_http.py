"""A CI without fleet credentials asks the running daemon to run a pull request's gate
(``reconciler gauntlet MODEL --rev PR --daemon URL``, signed with the webhook secret).
The daemon's own code runs it in the sandbox and records the verdict, so the merge then
flips at once on the remembered verdict; an unsigned request gets nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Result, git
from tests.e2e.daemon import DaemonProcess, wait_until
from tests.fleet import Fleet, sha

SECRET = b"a-webhook-secret-of-some-length"
PASSING = "import json; print(json.dumps({'accuracy': 0.97}))"


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    made = Fleet(tmp_path)
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    made.settings_file.write_text(f"repo: {made.repo}\nstateDir: {made.state}\n"
                                  "listen: 127.0.0.1:0\nresync: 1h\n"
                                  "webhook: {secretFile: secret}\n")
    made.gate(["python3", "-c", PASSING])
    made.commit("a gated model")
    return made


@pytest.fixture
def daemon(fleet: Fleet, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(fleet.settings_file, fleet.state, tmp_path)
    yield process
    if process.process.poll() is None:
        process.stop()


def test_a_ci_asks_the_daemon_to_run_a_prs_gate_and_the_merge_flips_at_once(
        fleet: Fleet, daemon: DaemonProcess, tmp_path: Path,
        cli: Callable[..., Result]) -> None:
    daemon.wait_ready()
    git(fleet.repo, "checkout", "-q", "-b", "pr/v2")
    fleet.model(b"weights-v2")
    fleet.gate(["python3", "-c", PASSING])
    fleet.commit("a new model in a pull request")
    git(fleet.repo, "checkout", "-q", "main")
    secret_file = tmp_path / "ci-secret"
    secret_file.write_bytes(SECRET)
    ci = tmp_path / "ci"  # no settings, no state dir, no fleet credentials
    ci.mkdir()
    asked = cli("gauntlet", "policy", "--rev", "pr/v2", "--daemon", daemon.address,
                "--secret-file", str(secret_file), cwd=ci)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert asked.stdout.startswith(f"PASS  policy sha256:{sha(b'weights-v2')}")
    assert not (ci / ".state").exists() and list(ci.iterdir()) == []

    (tmp_path / "wrong").write_bytes(b"not-the-secret-at-all")
    refused = cli("gauntlet", "policy", "--rev", "pr/v2", "--daemon", daemon.address,
                  "--secret-file", str(tmp_path / "wrong"), cwd=ci)
    assert refused.returncode == 3 and "401" in refused.stderr

    git(fleet.repo, "merge", "-q", "--no-ff", "pr/v2", "-m", "merge the new model")
    pointer = fleet.root / "models" / "current.bin"
    wait_until(lambda: pointer.exists() and pointer.read_bytes() == b"weights-v2",
               what="the flip after the merge")
    journal = fleet.journal()
    gates = [e for e in journal.events(action="gate") if e.detail.get("digest")
             == sha(b"weights-v2")]
    journal.close()
    assert gates and gates[-1].detail["remembered"] is True, "no gauntlet ran again"
