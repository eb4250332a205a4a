"""-o text|json|yaml, colour and progress through the real command, on a real terminal (a
pty) and in a pipe."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.conftest import EXAMPLE, GIT_ENV, Result, git
from tests.fleet import Fleet, sha

Cli = Callable[..., Result]
_MAX_OUTPUT = 1 << 20  # bytes read back from a terminal: bounded, whatever the command does


def _yaml(text: str) -> object:
    return YAML(typ="safe", pure=True).load(text)


def on_terminal(args: list[str], cwd: Path, env: dict[str, str] | None = None
                ) -> tuple[int, str]:
    """``python -m reconciler ARGS`` with stdout and stderr on a pseudo-terminal."""
    leader, follower = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environment.update({**GIT_ENV, "TERM": "xterm", **(env or {})})
    process = subprocess.Popen([sys.executable, "-m", "reconciler", *args], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                               env=environment)
    os.close(follower)
    received = bytearray()
    try:
        while len(received) < _MAX_OUTPUT:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(leader)
        code = process.wait(timeout=120)
    return code, received.decode(errors="replace")


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


def test_plan_colours_a_terminal_never_a_pipe_nor_with_no_color(fleet: Fleet, cli: Cli,
                                                                tmp_path: Path) -> None:
    config = ["--config", str(fleet.settings_file)]
    code, shown = on_terminal(["plan", *config], tmp_path)
    assert code == 2, shown
    assert "\x1b[32m+ Strategy app: create" in shown  # a new file: green, terraform-like
    assert "\x1b[36m@@" in shown  # the diff's hunk header
    code, shown = on_terminal(["plan", *config], tmp_path, env={"NO_COLOR": "1"})
    assert code == 2 and "+ Strategy app: create" in shown and "\x1b[" not in shown
    code, shown = on_terminal(["plan", "--color", "never", *config], tmp_path)
    assert code == 2 and "\x1b[" not in shown
    piped = cli("plan", *config)
    assert piped.returncode == 2 and "+ Strategy app: create" in piped.stdout
    assert "\x1b[" not in piped.stdout
    forced = cli("plan", "--color", "always", *config)
    assert "\x1b[32m+ Strategy app: create" in forced.stdout


def test_plan_apply_status_history_say_the_same_in_json_and_yaml(fleet: Fleet,
                                                                 cli: Cli) -> None:
    config = ["--config", str(fleet.settings_file)]
    as_json, as_yaml = cli("plan", "-o", "json", *config), cli("plan", "-o", "yaml", *config)
    assert as_json.returncode == as_yaml.returncode == 2
    plan = json.loads(as_json.stdout)
    assert plan == _yaml(as_yaml.stdout) and plan["formatVersion"] == 1
    applied = cli("apply", "--output", "json", *config)
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert report["result"] in ("changed", "converged")
    assert {(a["kind"], a["name"], a["result"]) for a in report["actions"]} >= {
        ("Strategy", "app", "applied")}, report
    for command in ("status", "history"):
        as_json, as_yaml = cli(command, "-o", "json", *config), cli(command, "-o", "yaml",
                                                                    *config)
        assert as_json.returncode == as_yaml.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout) == _yaml(as_yaml.stdout), command
    objects = json.loads(cli("status", "-o", "json", *config).stdout)["objects"]
    assert {row["name"]: row["status"] for row in objects} == {"app": "Ready",
                                                               "policy": "Ready"}


def test_validate_reports_errors_as_objects(fleet: Fleet, cli: Cli, tmp_path: Path) -> None:
    folder = fleet.repo / "desired-state"
    valid = json.loads(cli("validate", str(folder), "-o", "json").stdout)
    assert valid["valid"] is True and valid["errors"] == []
    assert valid["checked"][0]["counts"]["models"] == 1
    fleet.write("broken.yaml", "apiVersion: reconciler/v1\nkind: Target\nmetadata: "
                "{name: late}\nspec:\n  local: {root: x}\n  soak: 30 minutes\n  after: edge\n")
    for fmt, load in (("json", json.loads), ("yaml", _yaml)):
        done = cli("validate", str(folder), "-o", fmt)
        assert done.returncode == 1, done.stderr
        report = load(done.stdout)
        assert report["valid"] is False
        [error] = report["errors"]
        assert error == {"file": str(folder / "broken.yaml"), "line": 6, "column": 9,
                         "rule": "duration", "message": error["message"]}, error
        assert "'30 minutes' must be a duration" in error["message"]


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A scratch folder in memory where there is one (a bounded file, no disk wear)."""
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() and os.access(shm, os.W_OK)
                                   else None))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_verify_shows_rate_and_eta_on_a_terminal_and_nothing_in_a_pipe(
        tmpfs: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmpfs / "model.bin"
    data = os.urandom(1 << 20) * 16  # 16 MiB: several progress callbacks
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    code, shown = on_terminal(["verify", str(path), "--sha256", digest], tmp_path)
    assert code == 0, shown
    updates = shown.replace("\r\n", "\n").split("\r")  # a terminal shows \n as \r\n
    assert updates[1].startswith("hashing model.bin: 1.0 MiB of 16.0 MiB (6%), ")
    assert "MiB/s, ETA " in updates[1]  # the first update comes at once, with an ETA
    last, result = updates[-1].split("\n", 1)  # the final state stays on screen
    assert "16.0 MiB of 16.0 MiB (100%)" in last and "done in" in last
    assert result == f"ok: {path} (file) sha256:{digest}\n"
    piped = cli("verify", str(path), "--sha256", digest)
    assert piped.returncode == 0 and piped.stderr == ""
    assert piped.stdout == f"ok: {path} (file) sha256:{digest}\n"
    ok = json.loads(cli("verify", str(path), "--sha256", f"sha256:{digest}", "-o",
                        "json").stdout)
    assert ok == {"ok": True, "path": str(path), "sha256": digest, "kind": "file",
                  "error": None}
    wrong = cli("verify", str(path), "--sha256", "0" * 64, "-o", "json")
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["ok"] is False


def test_manifest_and_schema_print_data(cli: Cli, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "weights.bin").write_bytes(b"w" * 100)
    text = cli("manifest", str(bundle))
    as_json = json.loads(cli("manifest", str(bundle), "-o", "json").stdout)
    assert as_json["sha256"] == text.stdout.strip()
    assert len(as_json["sha256"]) == 64
    assert Path(as_json["manifest"]).is_file()
    assert cli("verify", str(bundle), "--sha256", as_json["sha256"]).returncode == 0


def test_a_gauntlet_shows_games_rate_and_a_ceiling_on_a_terminal(cli: Cli,
                                                                  tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.model((EXAMPLE / "models" / "connect4-policy-v2.pt").read_bytes())
    text = (fleet.repo / "desired-state" / "model.yaml").read_text()
    fleet.write("model.yaml", text.replace("  pointer:", "  gauntlet: gate\n  pointer:"))
    fleet.write("gate.yaml", json.dumps({
        "apiVersion": "reconciler/v1", "kind": "Gauntlet", "metadata": {"name": "gate"},
        "spec": {"device": "cpu", "match": {"game": "connect4", "games": 40, "seed": 3,
                                            "opponents": [{"name": "random",
                                                           "minScore": 0.85}]}}}))
    fleet.commit("a gate of at most 40 games")
    config = ["--config", str(fleet.settings_file)]
    code, shown = on_terminal(["gauntlet", "policy", *config], tmp_path)
    assert code == 2, shown  # 40 games cannot decide: inconclusive
    updates = shown.replace("\r\n", "\n").split("\r")
    assert any(u.startswith("gauntlet for policy: ") and " of at most 40 games (" in u
               and "games/s" in u for u in updates), shown
    last = updates[-1].split("\n", 1)[0]
    assert last.startswith("gauntlet for policy: 40 of at most 40 games (100%)"), shown
    again = cli("gauntlet", "policy", *config, "-o", "yaml")
    assert again.returncode == 2 and again.stderr == ""
    verdict = _yaml(again.stdout)
    assert isinstance(verdict, dict)
    assert (verdict["outcome"], verdict["remembered"]) == ("inconclusive", True)


def test_escape_sequences_in_repository_content_never_reach_the_terminal(
        fleet: Fleet, cli: Cli, tmp_path: Path) -> None:
    fleet.strategy("OK = True\nTITLE = '\x1b]0;pwned\x07\x1b[2J'\n")
    fleet.commit("a strategy whose text would retitle and clear a terminal")
    code, shown = on_terminal(["plan", "--config", str(fleet.settings_file)], tmp_path)
    assert code == 2, shown
    assert "TITLE = '\\x1b]0;pwned\\x07\\x1b[2J'" in shown
    assert "\x1b]" not in shown and "\x1b[2J" not in shown and "\x07" not in shown
    exact = json.loads(cli("plan", "-o", "json", "--config", str(fleet.settings_file)).stdout)
    [diff] = [a["diff"] for a in exact["actions"] if a["name"] == "app"]
    assert "\x1b]0;pwned\x07" in diff  # JSON escapes it; the data stays exact


def _as_json(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    """The command's exit code and its one JSON document on stdout."""
    as_json = cli(*args, "-o", "json")
    value = json.loads(as_json.stdout)
    assert isinstance(value, dict), as_json.stdout
    return as_json.returncode, value


def test_suspend_resume_and_reconcile_say_what_they_did_in_json_and_yaml(
        fleet: Fleet, cli: Cli) -> None:
    config = ["--config", str(fleet.settings_file)]
    assert cli("apply", *config).returncode == 0
    code, suspended = _as_json(cli, "suspend", "edge", "--reason", "driver upgrade", *config)
    assert code == 0
    assert suspended["suspended"] == ["edge"] and suspended["all"] is False
    assert suspended["reason"] == "driver upgrade" and isinstance(suspended["at"], float)
    assert suspended["daemon"] == {"running": False, "tookUp": False, "pid": None,
                                   "error": None}
    again = cli("suspend", "edge", "--reason", "driver upgrade", "-o", "yaml", *config)
    assert again.returncode == 0 and "no daemon is running" in again.stderr
    shown = _yaml(again.stdout)
    assert isinstance(shown, dict) and shown["at"] >= suspended["at"]
    assert {**shown, "at": 0} == {**suspended, "at": 0}, "YAML says what JSON says"
    code, resumed = _as_json(cli, "resume", "edge", *config)
    assert code == 0 and resumed["resumed"] == ["edge"] and resumed["who"] == suspended["who"]
    code, nothing = _as_json(cli, "resume", "--all", *config)
    assert code == 0 and nothing["resumed"] == []
    code, asked = _as_json(cli, "reconcile", *config)
    assert code == 0 and asked == {"wait": False, "daemon": suspended["daemon"], "pass": None}
    as_yaml = cli("reconcile", "--wait", "--timeout", "1s", "-o", "yaml", *config)
    assert as_yaml.returncode == 1, "--wait without a daemon: no pass ran"
    assert _yaml(as_yaml.stdout) == {**asked, "wait": True}
    assert "no daemon is running" in as_yaml.stderr


def test_promote_says_gate_branch_commit_and_diff_in_json_and_yaml(tmp_path: Path,
                                                                    cli: Cli) -> None:
    from tests.integration.test_promote import NEW, POOR, Setup

    setup = Setup(tmp_path)
    dry = cli("promote", "policy", "--artifact", setup.uri, "--dry-run", "-o", "json",
              *setup.config())
    assert dry.returncode == 0, dry.stderr
    value = json.loads(dry.stdout)
    assert (value["outcome"], value["sha256"], value["branch"]) == \
        ("dry-run", hashlib.sha256(NEW).hexdigest(), None)
    assert value["gate"]["outcome"] == "passed" and value["gate"]["evidence"]
    assert value["diff"].startswith("--- a/desired-state/model.yaml")
    assert "PASS  policy" in dry.stderr, "the text a person reads goes to stderr"
    done = cli("promote", "policy", "--artifact", setup.uri, "-o", "yaml", *setup.config())
    assert done.returncode == 0, done.stderr
    proposed = _yaml(done.stdout)
    assert isinstance(proposed, dict)
    assert proposed["outcome"] == "proposed" and proposed["branch"] in setup.branches()
    assert proposed["commit"] == git(setup.remote, "rev-parse", proposed["branch"])
    assert proposed["pullRequest"] is None and proposed["gate"]["remembered"] is True
    assert {**proposed, "outcome": "dry-run", "branch": None, "commit": None} == \
        {**value, "gate": proposed["gate"]}
    rejected = Setup(tmp_path / "poor", POOR)
    failed = cli("promote", "policy", "--artifact", rejected.uri, "-o", "json",
                 *rejected.config())
    assert failed.returncode == 1
    verdict = json.loads(failed.stdout)
    assert verdict["outcome"] == "rejected" and verdict["commit"] is None
    assert verdict["gate"]["evidence"]["metrics"] == {"accuracy": 0.5}
    unknown = cli("promote", "nobody", "--artifact", setup.uri, "-o", "json",
                  *setup.config())
    assert unknown.returncode == 3
    assert json.loads(unknown.stdout)["error"].startswith("no Model named 'nobody'")


def test_apply_shows_a_downloads_bytes_rate_and_eta_on_a_terminal(
        tmpfs: Path, fleet: Fleet, cli: Cli, tmp_path: Path) -> None:
    data = os.urandom(1 << 19).hex().encode() * 16  # 16 MiB of text the health check reads
    (tmpfs / "policy-v2.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    uri = (tmpfs / "policy-v2.bin").as_uri()
    model = fleet.repo / "desired-state" / "model.yaml"
    fleet.write("model.yaml", model.read_text().replace(
        f"uri: models/policy.bin, sha256: {sha(b'weights-v1')}",
        f"uri: '{uri}', sha256: {digest}"))
    fleet.commit("a model fetched from a file root")
    with fleet.settings_file.open("a") as settings:
        settings.write(f"artifacts: {{fileRoots: [{tmpfs}]}}\n")
    code, shown = on_terminal(["apply", "--config", str(fleet.settings_file)], tmp_path)
    assert code == 0, shown
    lines = shown.replace("\r\n", "\n").split("\n")
    [fetched] = [line for line in lines if "fetching policy: " in line]
    updates = fetched.split("\r")
    # The rate's unit follows the speed (a tmpfs copy may run at GiB/s).
    assert any("MiB of 16.0 MiB (" in u and re.search(r"[KMG]iB/s, ETA ", u)
               for u in updates), fetched
    assert "16.0 MiB of 16.0 MiB (100%)" in updates[-1] and "done in" in updates[-1]
    assert (fleet.root / "models" / "current.bin").read_bytes() == data
    piped = cli("apply", "--config", str(fleet.settings_file))
    assert piped.returncode == 0 and "\r" not in piped.stdout + piped.stderr


ESCAPES = "\x1b]0;pwned\x07\x1b[2J"  # would retitle, then clear, a terminal


def test_no_command_sends_repository_or_operator_escapes_to_a_terminal(
        fleet: Fleet, cli: Cli) -> None:
    """Health check output (repository code) and a gate's metrics reach apply, status,
    history and gauntlet as text: shown, never obeyed. A suspension's reason with escapes
    is refused outright."""
    loud = f"import sys; sys.stderr.write({ESCAPES!r}); sys.exit(1)"
    fleet.strategy("OK = 1\n", health=f"command: [python3, -c, {json.dumps(loud)}]")
    fleet.gate(["python3", "-c", "import json; print(json.dumps({'accuracy': 0.95, "
                f"'note': {ESCAPES!r}}}))"])
    fleet.commit("a health check and a gate that print escape sequences")
    config = ["--config", str(fleet.settings_file)]
    shown = {"apply": cli("apply", *config)}
    assert shown["apply"].returncode == 1
    refused = cli("suspend", "edge", "--reason", f"upgrade {ESCAPES}", *config)
    assert refused.returncode == 1, "an operator's escapes are refused before they are kept"
    shown |= {"suspend": refused, "status": cli("status", *config),
              "history": cli("history", *config),
              "gauntlet": cli("gauntlet", "policy", *config),
              "resume": cli("resume", "edge", *config)}
    for command, done in shown.items():
        both = done.stdout + done.stderr
        assert "\x1b" not in both and "\x07" not in both, (command, both)
    assert "\\x1b]0;pwned\\x07" in shown["status"].stdout  # shown, escaped
    as_json = json.loads(cli("status", "-o", "json", *config).stdout)
    assert any(ESCAPES in (row["message"] or "") for row in as_json["objects"]), \
        "JSON carries the exact text, escaped"


def test_schema_output_dir_writes_only_its_own_files_and_says_why_it_cannot(
        cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "schemas"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (folder / "target.schema.json").symlink_to(victim)  # planted: never followed
    assert cli("schema", "--output-dir", str(folder)).returncode == 0
    assert victim.read_text() == "keep\n"
    assert not (folder / "target.schema.json").is_symlink()
    for blocked in (victim, folder / "sub"):  # a file where the folder goes; a folder
        if blocked.name == "sub":             # where a schema goes
            (blocked / "target.schema.json").mkdir(parents=True)
        done = cli("schema", "--output-dir", str(blocked))
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"reconciler schema: cannot write {blocked}"), done.stderr
