"""The daemon as a subprocess: it notifies a webhook receiver of what its passes do (with
the receiver's token kept out of the payload, the log, daemon.json and the journal, and
deliveries counted in /metrics), and answers a signed ``POST /plan`` with the plan of a
pull request's revision against the live fleet — what CI posts as a comment, without fleet
credentials."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import REPO_ROOT, git
from tests.e2e.conftest import SECRET
from tests.e2e.daemon import running, wait_until
from tests.fleet import Fleet
from tests.receivers import receiving

TOKEN = "receiver-token-3e7a91"


def _post(address: str, path: str, body: bytes, secret: bytes = SECRET,
          length: int | None = None) -> tuple[int, bytes]:
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://{address}{path}", data=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature,
        "Content-Length": str(len(body) if length is None else length)})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_daemon_notifies_and_plans_a_pull_request_for_ci(fleet: Fleet,
                                                              tmp_path: Path) -> None:
    with receiving() as receiver:
        (tmp_path / "hook-url").write_text(f"{receiver.url}/events?token={TOKEN}\n")
        with fleet.settings_file.open("a") as settings:
            settings.write("notifications:\n  receivers:\n"
                           "    - {name: ops, type: webhook, urlFile: hook-url,"
                           " events: [applied, promoted, rolled-back]}\n")
        with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
            daemon.wait_ready()
            received = receiver.wait_for(2)
            assert sorted(r.json()["type"] for r in received) == [
                "reconciler.applied", "reconciler.promoted"]
            metrics = urllib.request.urlopen(f"http://{daemon.address}/metrics",
                                             timeout=10).read().decode()
            assert 'reconciler_notifications_total{receiver_kind="webhook",' \
                   'result="delivered"} 2.0' in metrics

            git(fleet.repo, "checkout", "-q", "-b", "pr/7")
            fleet.strategy("OK = 'serving v2'\n")
            pull = fleet.commit("a pull request")
            git(fleet.repo, "checkout", "-q", "main")

            status, body = _post(daemon.address, "/plan",
                                 json.dumps({"rev": pull}).encode())
            assert status == 200, body
            plan = json.loads(body)
            assert plan["revision"].endswith(pull) and plan["inSync"] is False
            [change] = [a for a in plan["actions"] if a["op"] != "noop"]
            assert (change["kind"], change["name"]) == ("Strategy", "app")
            assert "+OK = 'serving v2'" in change["diff"]
            assert (fleet.root / "app" / "app.py").read_text() == "OK = 'serving'\n"

            comment = subprocess.run(
                [sys.executable, str(REPO_ROOT / "docs" / "ci" / "plan-comment.py"),
                 "--daemon", daemon.address, "--secret-file", str(tmp_path / "secret"),
                 "--rev", pull], capture_output=True, text=True, timeout=120, check=False)
            assert comment.returncode == 2, comment.stdout + comment.stderr
            assert "| edge | Strategy/app | update |" in comment.stdout
            assert "+OK = 'serving v2'" in comment.stdout

            # A pull request that points the target elsewhere gets the plan, not what
            # lives there.
            git(fleet.repo, "checkout", "-q", "-b", "pr/8")
            fleet.write("targets.yaml", (fleet.repo / "desired-state" / "targets.yaml")
                        .read_text().replace("root: edge", "root: elsewhere"))
            moved = fleet.commit("a pull request that moves the target")
            git(fleet.repo, "checkout", "-q", "main")
            status, body = _post(daemon.address, "/plan", json.dumps({"rev": moved}).encode())
            assert status == 200, body
            assert all(a["diff"] is None for a in json.loads(body)["actions"])

            refused, _ = _post(daemon.address, "/plan", json.dumps({"rev": pull}).encode(),
                               secret=b"not-the-secret-at-all")
            unknown, why = _post(daemon.address, "/plan", b'{"rev": "no-such-branch"}')
            large, _ = _post(daemon.address, "/plan", b"{}", length=1 << 20)
            malformed, _ = _post(daemon.address, "/plan", b'{"revision": "main"}')
            assert (refused, unknown, large, malformed) == (401, 404, 413, 400)
            assert json.loads(why)["reason"] == "RevisionNotFound"
            log = daemon.log() + (fleet.state / "daemon.json").read_text()
        journal = fleet.journal()
        shown = json.dumps([e.detail for e in journal.events(limit=1000)])
        journal.close()
    assert TOKEN not in log and TOKEN not in shown
    assert all(TOKEN not in r.body.decode() for r in receiver.received)
    assert all(r.path == f"/events?token={TOKEN}" for r in receiver.received)


def test_a_hanging_receiver_holds_neither_the_passes_nor_the_stop(fleet: Fleet,
                                                                   tmp_path: Path) -> None:
    with receiving() as receiver:
        receiver.hang = threading.Event()  # never set until the daemon is gone
        with fleet.settings_file.open("a") as settings:
            settings.write("notifications:\n  receivers:\n"
                           "    - {name: stuck, type: slack, urlFile: hook-url,"
                           " timeout: 5m}\n")
        (tmp_path / "hook-url").write_text(receiver.url + "\n")
        with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
            daemon.wait_ready()  # the first pass ended while its first event is held
            receiver.wait_for(1)
            fleet.strategy("OK = 'serving v2'\n")
            fleet.commit("a second change while the receiver hangs")
            wait_until(lambda: (fleet.root / "app" / "app.py").read_text()
                       == "OK = 'serving v2'\n", what="the second change")
            assert daemon.stop() == 0
        assert not receiver.hang.is_set() and len(receiver.received) == 1
        assert "undelivered event(s) dropped at stop" in daemon.log()


def test_sighup_replaces_the_receivers_and_an_unreadable_secret_keeps_the_old_ones(
        fleet: Fleet, tmp_path: Path) -> None:
    base = fleet.settings_file.read_text()

    def receivers(url_file: str) -> None:
        fleet.settings_file.write_text(base + "notifications:\n  receivers:\n"
                                       f"    - {{name: ops, type: webhook, urlFile: {url_file},"
                                       " events: [applied]}\n")

    with receiving() as first, receiving() as second:
        (tmp_path / "first-url").write_text(first.url + "\n")
        (tmp_path / "second-url").write_text(second.url + "\n")
        receivers("first-url")
        with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
            daemon.wait_ready()
            first.wait_for(1)
            receivers("missing-url")
            daemon.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload refused" in daemon.log(), what="the refusal")
            fleet.strategy("OK = 'serving v2'\n")
            fleet.commit("heard by the first receiver still")
            first.wait_for(2)
            receivers("second-url")
            daemon.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "settings reloaded" in daemon.log(), what="the reload")
            fleet.strategy("OK = 'serving v3'\n")
            fleet.commit("heard by the second receiver")
            [heard] = second.wait_for(1)
    assert heard.json()["data"]["revision"].endswith(git(fleet.repo, "rev-parse", "HEAD"))
    assert len(first.received) == 2 and "missing-url" in daemon.log()


def test_an_invalid_commit_stalls_every_target_once_and_its_fix_is_told(
        fleet: Fleet, tmp_path: Path) -> None:
    with receiving() as receiver:
        (tmp_path / "hook-url").write_text(receiver.url + "\n")
        with fleet.settings_file.open("a") as settings:
            settings.write("notifications:\n  receivers:\n"
                           "    - {name: ops, type: webhook, urlFile: hook-url,"
                           " events: [stalled, applied]}\n")
        with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
            daemon.wait_ready()
            receiver.wait_for(1)  # the strategy's first delivery
            fleet.write("broken.yaml", "apiVersion: reconciler/v1\nkind: Target\n")
            fleet.commit("an invalid document")
            stalled = receiver.wait_for(2)[1].json()
            (fleet.repo / "desired-state" / "broken.yaml").unlink()
            fleet.commit("the fix")
            fixed = receiver.wait_for(3)[2].json()
    assert stalled["type"] == "reconciler.stalled" and stalled["subject"] == "edge"
    assert stalled["data"]["reason"] == "InvalidDesiredState"
    assert "broken.yaml" in stalled["data"]["message"] and stalled["data"]["kind"] is None
    assert (fixed["type"], fixed["subject"], fixed["data"]["reason"]) == (
        "reconciler.applied", "edge", "InSync")
    assert len(receiver.received) == 3


def test_suspend_and_resume_reach_a_receiver_filtered_to_a_target_fleet_wide_too(
        fleet: Fleet, tmp_path: Path) -> None:
    """The daemon's control path (the CLI's ``suspend``/``resume`` through its socket)
    publishes them; a suspension of the whole fleet stops this target too, so a receiver
    that hears only this target hears it."""
    with receiving() as receiver:
        (tmp_path / "hook-url").write_text(receiver.url + "\n")
        with fleet.settings_file.open("a") as settings:
            settings.write("notifications:\n  receivers:\n"
                           "    - {name: ops, type: webhook, urlFile: hook-url,"
                           " events: [suspended, resumed], targets: [edge]}\n")
        with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
            daemon.wait_ready()
            for command in (["suspend", "edge", "--reason", "INC-1"], ["resume", "edge"],
                            ["suspend", "--all", "--reason", "INC-2"], ["resume", "--all"]):
                done = subprocess.run(
                    [sys.executable, "-m", "reconciler", *command, "--config",
                     str(fleet.settings_file)], capture_output=True, text=True, timeout=120,
                    check=False)
                assert done.returncode == 0, done.stdout + done.stderr
            heard = [r.json() for r in receiver.wait_for(4)]
    assert [(e["type"], e["subject"]) for e in heard] == [
        ("reconciler.suspended", "edge"), ("reconciler.resumed", "edge"),
        ("reconciler.suspended", "*"), ("reconciler.resumed", "*")]
    assert "INC-1" in heard[0]["data"]["message"] and "INC-2" in heard[2]["data"]["message"]
    assert "the whole fleet" in heard[3]["data"]["message"]


def test_sighup_reads_a_rotated_token_from_the_same_file(fleet: Fleet,
                                                          tmp_path: Path) -> None:
    """The receivers' secret files are read at start and on SIGHUP: a token rotated in
    place (the settings unchanged) is the one sent after the reload."""
    with receiving() as receiver:
        (tmp_path / "hook-url").write_text(receiver.url + "\n")
        (tmp_path / "hook-token").write_text("first-token-0a1b2c\n")
        with fleet.settings_file.open("a") as settings:
            settings.write("notifications:\n  receivers:\n"
                           "    - {name: ops, type: webhook, urlFile: hook-url,"
                           " bearerTokenFile: hook-token, events: [applied]}\n")
        with running(fleet.settings_file, fleet.state, tmp_path) as daemon:
            daemon.wait_ready()
            receiver.wait_for(1)
            (tmp_path / "hook-token").write_text("second-token-3d4e5f\n")
            daemon.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "settings reloaded" in daemon.log(), what="the reload")
            fleet.strategy("OK = 'serving v2'\n")
            fleet.commit("heard with the rotated token")
            first, second = receiver.wait_for(2)
    assert first.headers["Authorization"] == "Bearer first-token-0a1b2c"
    assert second.headers["Authorization"] == "Bearer second-token-3d4e5f"
