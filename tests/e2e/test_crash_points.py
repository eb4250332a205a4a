"""``kill -9`` at the points the random-moment test rarely hits: between a pointer flip and
its health check, half-way through a store removal, during a download. After each: every
pointer resolves to the bytes of a verified digest, the journal passes
``PRAGMA integrity_check``, and a restarted daemon converges to the last commit."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.e2e.daemon import running, wait_until
from tests.fleet import RESTART, Fleet, sha

PLANTED = str(Path(__file__).with_name("planted_crash.py"))
V1, BAD, V3 = b"weights-v1", b"bad", b"weights-v3"

# A model health check that, while ``block`` exists beside it, says where it is and hangs
# (the daemon is killed there, within the 5 s the check may take); otherwise it fails for
# the bad weights.
HEALTH = """import os, pathlib, sys, time
flags = pathlib.Path(sys.argv[1])
if (flags / "block").exists():
    (flags / "checking").write_text(str(os.getpid()))
    time.sleep(120)
sys.exit(0 if open("models/current.bin", "rb").read() != b"bad" else 1)
"""


def model_doc(uri: str, digest: str, health: str, *, keep: int = 3) -> str:
    return f"""apiVersion: reconciler/v1
kind: Model
metadata: {{name: policy}}
spec:
  targets: [edge]
  artifact: {{uri: "{uri}", sha256: {digest}, format: file}}
  pointer: {{path: models/current.bin}}
  keep: {keep}
  restart: {{command: [python3, -c, "{RESTART}"]}}
  health: {{command: {health}, timeout: 5s}}
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    made = Fleet(tmp_path)
    (tmp_path / "health.py").write_text(HEALTH)
    return made


def health_command(tmp_path: Path) -> str:
    return f"[python3, {tmp_path / 'health.py'}, {tmp_path}]"


def pointed_bytes(fleet: Fleet) -> bytes | None:
    try:
        return (fleet.root / "models" / "current.bin").read_bytes()
    except OSError:
        return None


def assert_safe(fleet: Fleet) -> None:
    """Every pointer names a store object whose bytes match its digest; the journal is
    whole."""
    objects = fleet.state / "store" / "sha256"
    for path in fleet.root.rglob("*"):
        if path.is_symlink():
            link = Path(os.readlink(path))
            assert link.parent == objects, f"{path} -> {link} leaves the store"
            assert hashlib.sha256(link.read_bytes()).hexdigest() == link.name, \
                f"{path} names {link.name[:12]}, whose bytes do not match"
    database = sqlite3.connect(fleet.state / "journal.db")
    try:
        assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        database.close()


def converge_first(fleet: Fleet, tmp_path: Path) -> None:
    with running(fleet.settings_file, fleet.state, tmp_path) as first:
        first.wait_ready()
        wait_until(lambda: pointed_bytes(fleet) == V1, what="the first flip")


@pytest.mark.slow
def test_kill_9_between_a_flip_and_its_health_check_rolls_back_to_the_journals_digest(
        fleet: Fleet, tmp_path: Path) -> None:
    fleet.write("model.yaml", model_doc("models/policy.bin", sha(V1), health_command(tmp_path)))
    fleet.commit("a model whose health check the test can hold")
    converge_first(fleet, tmp_path)

    (tmp_path / "block").touch()
    fleet.write("models/policy.bin", BAD)
    fleet.write("model.yaml", model_doc("models/policy.bin", sha(BAD), health_command(tmp_path)))
    fleet.commit("weights that fail their health check")
    with running(fleet.settings_file, fleet.state, tmp_path) as victim:
        wait_until(lambda: (tmp_path / "checking").exists(), what="the health check to start")
        victim.kill9()
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int((tmp_path / "checking").read_text()), signal.SIGKILL)
    assert pointed_bytes(fleet) == BAD, "killed after the flip, before its check finished"
    assert_safe(fleet)

    (tmp_path / "block").unlink()
    with running(fleet.settings_file, fleet.state, tmp_path) as survivor:
        survivor.wait_ready()
        wait_until(lambda: pointed_bytes(fleet) == V1, what="the rollback to the good weights")
        journal = fleet.journal()
        row = journal.object(("edge", "Model", "policy")) or {}
        assert row["failed_digest"] == sha(BAD) and row["healthy_digest"] == sha(V1)
        undo = [e for e in journal.events("policy") if e.action == "rollback"
                and e.phase == "intent"]
        assert undo[-1].detail["toDigest"] == sha(V1), "the journal's digest, not the live one"
        assert_safe(fleet)

        fleet.write("models/policy.bin", V3)
        fleet.write("model.yaml", model_doc("models/policy.bin", sha(V3),
                                            health_command(tmp_path)))
        fleet.commit("good weights again")
        wait_until(lambda: pointed_bytes(fleet) == V3, what="convergence to the last commit")
    assert_safe(fleet)


def test_kill_9_during_a_store_removal_leaves_no_half_object(fleet: Fleet,
                                                            tmp_path: Path) -> None:
    command = health_command(tmp_path)
    fleet.write("model.yaml", model_doc("models/policy.bin", sha(V1), command, keep=1))
    fleet.commit("keep one digest: the next flip removes the old one")
    converge_first(fleet, tmp_path)

    (fleet.state / "PLANTED_KILL_IN_REMOVAL").touch()
    fleet.write("models/policy.bin", V3)
    fleet.write("model.yaml", model_doc("models/policy.bin", sha(V3), command, keep=1))
    fleet.commit("new weights")
    with running(fleet.settings_file, fleet.state, tmp_path, (PLANTED,)) as victim:
        wait_until(lambda: victim.process.poll() is not None, what="the planted kill")
        assert victim.process.returncode == -signal.SIGKILL, victim.log()
    trash = fleet.state / "store" / "trash"
    assert [p.name.split(".")[0] for p in trash.iterdir()] == [sha(V1)], \
        "killed between the rename into trash/ and the delete"
    assert not (fleet.state / "store" / "sha256" / sha(V1)).exists()
    assert pointed_bytes(fleet) == V3
    assert_safe(fleet)

    with running(fleet.settings_file, fleet.state, tmp_path) as survivor:
        survivor.wait_ready()
        assert not list(trash.iterdir()), "swept at start"
        wait_until(lambda: pointed_bytes(fleet) == V3
                   and (fleet.journal().object(("edge", "Model", "policy")) or {})
                   .get("status") == "Ready", what="converged to the last commit")
    assert_safe(fleet)


class _Artifact(http.server.BaseHTTPRequestHandler):
    """Serves ``payload``; until ``whole`` is set, only its first half, then hangs."""

    payload = b""
    whole = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        if self.whole.is_set():
            self.wfile.write(self.payload)
            return
        self.wfile.write(self.payload[:len(self.payload) // 2])
        self.wfile.flush()
        self.whole.wait(60)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_kill_9_during_a_download_keeps_the_old_pointer_and_resumes_cleanly(
        fleet: Fleet, tmp_path: Path) -> None:
    fleet.write("model.yaml", model_doc("models/policy.bin", sha(V1), health_command(tmp_path)))
    fleet.commit("weights from the repository")
    converge_first(fleet, tmp_path)

    payload = os.urandom(4 << 20)
    handler = type("Artifact", (_Artifact,), {"payload": payload, "whole": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/weights.bin"
        fleet.write("model.yaml", model_doc(url, sha(payload), health_command(tmp_path)))
        fleet.commit("weights from a server")
        partial = fleet.state / "store" / "partial"
        with running(fleet.settings_file, fleet.state, tmp_path) as victim:
            wait_until(lambda: partial.is_dir() and any(
                p.stat().st_size > 0 for p in partial.iterdir()), what="a partial download")
            victim.kill9()
        assert pointed_bytes(fleet) == V1, "the pointer never names unproven bytes"
        assert not (fleet.state / "store" / "sha256" / sha(payload)).exists()
        assert_safe(fleet)

        handler.whole.set()
        with running(fleet.settings_file, fleet.state, tmp_path) as survivor:
            survivor.wait_ready()
            wait_until(lambda: pointed_bytes(fleet) == payload,
                       what="convergence to the last commit")
        assert not list(partial.iterdir()), "no partial download left behind"
    finally:
        handler.whole.set()
        server.shutdown()
        server.server_close()
    assert_safe(fleet)
