"""``reconciler promote`` end to end with real parts: a bare repository as the push remote
(and git http-backend behind Basic auth), the gate run as ``reconciler gauntlet`` runs it,
a forge API on 127.0.0.1. Bad inputs each end with a clear message and nothing
half-written: no commit without its push reported, no second pull request on a retry."""

from __future__ import annotations

import difflib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from reconciler.journal import Journal
from reconciler.vocabulary import JournalAction
from tests.conftest import Result, git
from tests.fleet import Fleet, sha
from tests.integration.forge_servers import TOKEN, fake_forge
from tests.integration.git_servers import HttpGitServer, http_git_server

GOOD = "import json; print(json.dumps({'accuracy': 0.95}))"
POOR = "import json; print(json.dumps({'accuracy': 0.5}))"
NEW = b"weights-v2"
BRANCH = f"reconciler/promote/policy-{sha(NEW)[:12]}"


class Setup:
    """A gated fleet whose repository is served from a bare clone, and a new artifact."""

    def __init__(self, tmp_path: Path, gate: str = GOOD, *, extra: str = "",
                 repo: str | None = None) -> None:
        self.fleet = Fleet(tmp_path)
        self.fleet.gate(["python3", "-c", gate])
        self.fleet.commit("a gated model")
        self.remote = tmp_path / "served" / "fleet.git"
        self.remote.parent.mkdir()
        subprocess.run(["git", "clone", "-q", "--bare", str(self.fleet.repo),
                        str(self.remote)], check=True, capture_output=True, timeout=60)
        artifacts = tmp_path / "artifacts"
        artifacts.mkdir()
        self.artifact = artifacts / "policy-v2.bin"
        self.artifact.write_bytes(NEW)
        self.uri = self.artifact.as_uri()
        self.settings = tmp_path / "promote.yaml"
        self.settings.write_text(
            f"repo: {repo or self.remote}\nstateDir: {self.fleet.state}\nlisten: ''\n"
            f"artifacts: {{fileRoots: [{artifacts}]}}\n{extra}")

    def over_http(self, server: HttpGitServer, password: str) -> Path:
        """Serve the remote through git http-backend (Basic auth); returns the secret file."""
        secret = self.settings.parent / "git-password"
        secret.write_text(password + "\n")
        self.settings.write_text(self.settings.read_text().replace(
            f"repo: {self.remote}", f"repo: {server.url('fleet.git')}\ncredentials: "
            f"{{username: deploy, passwordFile: {secret}}}"))
        return secret

    def config(self) -> tuple[str, str]:
        return ("--config", str(self.settings))

    def branches(self) -> list[str]:
        return git(self.remote, "for-each-ref", "--format=%(refname:short)",
                   "refs/heads/").split()

    def model_file(self, ref: str) -> str:
        return git(self.remote, "show", f"{ref}:desired-state/model.yaml") + "\n"


def _changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_promote_proposes_exactly_the_digest_change_and_the_merge_flips_at_once(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    with fake_forge("github") as forge:
        setup = Setup(tmp_path, extra=forge.settings(tmp_path))
        assert cli("apply", *setup.config()).returncode == 0
        done = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"pushed branch {BRANCH}" in done.stdout
        assert "pull request #1 opened: https://github.example/acme/fleet/pull/1" in done.stdout
        assert BRANCH in setup.branches()
        before, after = setup.model_file("main"), setup.model_file(BRANCH)
        old_line = next(line for line in before.splitlines() if "sha256" in line)
        assert _changed_lines(before, after) == [
            f"-{old_line}",
            "+" + old_line.replace("models/policy.bin", f"'{setup.uri}'")
                          .replace(sha(b"weights-v1"), sha(NEW))]
        message = git(setup.remote, "log", "-1", "--format=%B", BRANCH)
        assert f"Promote Model policy to sha256:{sha(NEW)[:12]}" in message
        assert "gate:     passed (GatePassed)" in message and '"accuracy":0.95' in message
        assert git(setup.remote, "rev-parse", f"{BRANCH}~1") == \
            git(setup.remote, "rev-parse", "main"), "one commit on top of the branch's tip"
        assert [(p["head"], p["base"]) for p in forge.pulls] == [(BRANCH, "main")]
        assert TOKEN not in done.stdout + done.stderr

        again = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert again.returncode == 0, again.stdout + again.stderr
        assert "reusing it" in again.stdout and "already open" in again.stdout
        assert len(forge.pulls) == 1, "a retry never opens a second pull request"

        git(setup.remote, "update-ref", "refs/heads/main", f"refs/heads/{BRANCH}")  # merged
        assert cli("apply", *setup.config()).returncode == 0
        assert (setup.fleet.root / "models" / "current.bin").read_bytes() == NEW
        journal = Journal(setup.fleet.settings().journal_path, readonly=True)
        try:
            gates = [e.detail for e in journal.events(action=JournalAction.GATE)
                     if e.detail.get("digest") == sha(NEW)]
        finally:
            journal.close()
        assert gates and all(gate["remembered"] for gate in gates), \
            "the merge flipped on the verdict promote remembered"


def test_dry_run_prints_the_diff_and_commits_nothing(tmp_path: Path,
                                                     cli: Callable[..., Result]) -> None:
    setup = Setup(tmp_path)
    done = cli("promote", "policy", "--artifact", setup.uri, "--dry-run", *setup.config())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--- a/desired-state/model.yaml" in done.stdout
    assert f"+  artifact: {{uri: '{setup.uri}', sha256: {sha(NEW)}" in done.stdout
    assert "dry run: nothing committed or pushed" in done.stdout
    assert setup.branches() == ["main"]


def test_a_rejected_model_makes_no_commit_and_exits_1_with_the_evidence(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    setup = Setup(tmp_path, POOR)
    done = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("FAIL") and '"accuracy": 0.5' in done.stdout
    assert setup.branches() == ["main"]


def test_an_unknown_model_and_a_digest_mismatch_are_errors_with_nothing_written(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    setup = Setup(tmp_path)
    unknown = cli("promote", "nosuch", "--artifact", setup.uri, *setup.config())
    assert unknown.returncode == 3
    assert "no Model named 'nosuch'" in unknown.stdout and "known: policy" in unknown.stdout
    wrong = cli("promote", "policy", "--artifact", setup.uri, "--sha256", "0" * 64,
                *setup.config())
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    assert "ArtifactNotVerified" in wrong.stdout and "was not verified" in wrong.stdout
    malformed = cli("promote", "policy", "--artifact", setup.uri, "--sha256", "abc",
                    *setup.config())
    assert malformed.returncode == 3 and "64 lowercase hex" in malformed.stdout
    secret = "https://ml:hunter2-token@models.example/p.pt?X-Amz-Signature=SIGNED"
    leaky = cli("promote", "policy", "--artifact", secret, *setup.config())
    assert leaky.returncode == 3 and "would be committed to Git" in leaky.stdout
    assert "hunter2" not in leaky.stdout + leaky.stderr and "SIGNED" not in leaky.stdout
    bad_name = cli("promote", "policy", "--artifact", setup.uri, "--head", "x..lock/",
                   *setup.config())
    assert bad_name.returncode == 3 and "not a new branch name" in bad_name.stdout
    odd_name = cli("promote", "policy", "--artifact", setup.uri, "--head", "a//b.lock",
                   *setup.config())
    assert odd_name.returncode == 3 and "not a new branch name" in odd_name.stdout
    assert "PASS" not in bad_name.stdout + odd_name.stdout, "refused before the gate runs"
    assert setup.branches() == ["main"]


def test_a_branch_that_exists_with_another_change_is_refused(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    with fake_forge("gitlab") as forge:
        setup = Setup(tmp_path, extra=forge.settings(tmp_path))
        git(setup.remote, "branch", BRANCH, "main")  # someone else's branch, same name
        done = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert done.returncode == 3, done.stdout + done.stderr
        assert f"branch '{BRANCH}' already exists" in done.stdout
        assert git(setup.remote, "rev-parse", BRANCH) == git(setup.remote, "rev-parse", "main")
        assert forge.pulls == []


def test_a_push_the_remote_refuses_is_reported_and_opens_nothing(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    """A pre-receive hook says no (as a protected-branch rule does); hooks run behind
    git http-backend (libgit2's local transport runs none)."""
    with fake_forge("gitea") as forge:
        setup = Setup(tmp_path, extra=forge.settings(tmp_path))
        hook = setup.remote / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\necho 'branch creation is restricted' >&2\nexit 1\n")
        hook.chmod(0o755)
        with http_git_server(setup.remote.parent, "deploy", "pw-123456") as server:
            setup.over_http(server, "pw-123456")
            done = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert done.returncode == 3, done.stdout + done.stderr
        assert "refused the push" in done.stdout and "pushed branch" not in done.stdout
        assert setup.branches() == ["main"] and forge.pulls == []


def test_a_forge_that_hangs_or_refuses_leaves_the_pushed_branch_reported_and_a_retry_finishes(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    with fake_forge("github") as forge:
        setup = Setup(tmp_path, extra=forge.settings(tmp_path, timeout="300ms"))
        forge.faults = ["hang"] * 4
        hung = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert hung.returncode == 3, hung.stdout + hung.stderr
        assert f"pushed branch {BRANCH}" in hung.stdout and "timed out after 0.3s" in hung.stdout
        forge.faults = [401]
        failed = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert failed.returncode == 3, failed.stdout + failed.stderr
        assert "reusing it" in failed.stdout, "the pushed branch is reused, not pushed again"
        assert "answered 401 (the token in forge.tokenFile was refused" in failed.stdout
        forge.faults = [500, 500, 500, 500]
        unavailable = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert unavailable.returncode == 3 and "answered 500" in unavailable.stdout
        finished = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert len(forge.pulls) == 1 and "reusing it" in finished.stdout
        assert TOKEN not in hung.stdout + failed.stdout + unavailable.stdout + finished.stdout


def test_promote_pushes_over_http_with_the_settings_credentials(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    password = "git-SECRET-password-77"
    setup = Setup(tmp_path)
    with http_git_server(setup.remote.parent, "deploy", password) as server:
        secret = setup.over_http(server, password)
        done = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert done.returncode == 0, done.stdout + done.stderr
        assert BRANCH in setup.branches()
        assert "no forge configured" in done.stdout
        assert password not in done.stdout + done.stderr
        assert all(password not in " ".join(p.read_text(errors="replace").split())
                   for p in setup.fleet.state.rglob("*.json"))
        secret.write_text("wrong\n")
        git(setup.remote, "branch", "-D", BRANCH)
        refused = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert refused.returncode == 3 and "refused the credentials" in refused.stdout
        assert setup.branches() == ["main"]


def test_json_evidence_is_bounded_in_the_commit_message(tmp_path: Path) -> None:
    from reconciler.prcheck import GateRun
    from reconciler.promote import MAX_EVIDENCE_CHARS, _message
    run = GateRun("m", "main@sha1:" + "a" * 40, "b" * 64, "passed", "GatePassed", "ok",
                  evidence={"games": ["x" * 100] * 1000})
    message = _message(run, "m", "c" * 64, "https://user:pw@example.com/m.pt?sig=SECRET")
    assert len(message) < MAX_EVIDENCE_CHARS + 1000
    assert "pw" not in message and "SECRET" not in message
    assert json.loads(json.dumps(message))


def test_a_branch_with_our_file_and_more_is_not_reused(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    """The branch name is predictable (model and digest): someone with push access plants it
    with the very Model change promote would make plus a change of their own. A retry may
    reuse only a branch whose commit changes exactly what ours changes, or a pull request
    that says "Promote Model policy" would carry the extra change."""
    with fake_forge("github") as forge:
        setup = Setup(tmp_path, extra=forge.settings(tmp_path))
        forge.faults = [500] * 4  # the push lands, the pull request does not
        first = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert first.returncode == 3 and f"pushed branch {BRANCH}" in first.stdout
        work = tmp_path / "mallory"
        git(tmp_path, "clone", "-q", "--branch", BRANCH, str(setup.remote), str(work))
        (work / "desired-state" / "extra.yaml").write_text("# not part of the promotion\n")
        git(work, "add", "-A")
        git(work, "commit", "-q", "--amend", "--no-edit")
        git(work, "push", "-q", "--force", "origin", BRANCH)
        retry = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
        assert retry.returncode == 3, retry.stdout + retry.stderr
        assert f"branch '{BRANCH}' already exists" in retry.stdout
        assert forge.pulls == [], "no pull request for a change that is not only ours"


def test_branch_names_git_refuses_or_that_alias_the_tracked_branch_are_refused(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    """``git check-ref-format --branch`` refuses a leading '-' (an option to every git
    command that later names the branch) and HEAD; a remote on a case-insensitive file
    system stores MAIN in main's file, so a fast-forward push to it moves the tracked
    branch."""
    setup = Setup(tmp_path)
    for name in ("-f", "--force", "HEAD", "MAIN", "Main"):
        done = cli("promote", "policy", "--artifact", setup.uri, f"--head={name}",
                   *setup.config())
        assert done.returncode == 3, (name, done.stdout + done.stderr)
        assert "not a new branch name" in done.stdout and "PASS" not in done.stdout
    assert setup.branches() == ["main"]


def test_a_broken_settings_file_or_desired_state_is_an_error_not_a_rejection(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    """Exit 1 tells a pipeline its model was rejected: invalid input of the reconciler's
    own is 3 (DESIGN.md §2), with the file, line and rule."""
    setup = Setup(tmp_path)
    good = setup.settings.read_text()
    setup.settings.write_text(good + "forge: {type: bitbucket, url: 'https://x', "
                              "repository: a/b, tokenFile: t}\n")
    settings = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
    assert settings.returncode == 3, settings.stdout + settings.stderr
    assert "promote.yaml" in settings.stdout + settings.stderr
    setup.settings.write_text(good)
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(setup.remote), str(work))
    (work / "desired-state" / "model.yaml").write_text("kind: Model\nmetadata: {name: [\n")
    git(work, "commit", "-qam", "a broken model file")
    git(work, "push", "-q", "origin", "HEAD:main")
    desired = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
    assert desired.returncode == 3, desired.stdout + desired.stderr
    assert "model.yaml" in desired.stdout + desired.stderr
    assert setup.branches() == ["main"]


def test_a_fault_of_the_machine_is_an_error_not_a_rejection(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    """Whatever breaks on the way (here the journal cannot be opened) exits 3 with what
    broke: never Python's 1 with a traceback, which a pipeline reads as 'rejected'."""
    setup = Setup(tmp_path)
    setup.fleet.state.mkdir(parents=True, exist_ok=True)
    (setup.fleet.state / "journal.db").mkdir()
    done = cli("promote", "policy", "--artifact", setup.uri, *setup.config())
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "journal" in done.stdout + done.stderr
    assert setup.branches() == ["main"]
