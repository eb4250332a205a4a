"""The Git source against real repositories made with the git CLI."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from reconciler.errors import TransientError
from reconciler.source.git import GitSource, HistoryRewriteRefused, RevisionNotFound
from reconciler.source.signatures import SignaturePolicy, SignatureRefused
from tests.conftest import Repo, git


def source(repo: Repo, tmp_path: Path, **options: object) -> GitSource:
    return GitSource(str(repo.path), str(options.pop("branch", "main")),
                     str(options.pop("folder", "desired-state")), tmp_path / "mirrors",
                     **options)  # type: ignore[arg-type]


def test_reads_the_commit_not_the_working_tree(repo: Repo, tmp_path: Path) -> None:
    head = git(repo.path, "rev-parse", "HEAD")
    repo.write("budget.yaml", "uncommitted edit\n")
    accepted = source(repo, tmp_path).fetch()
    snapshot = accepted.snapshot
    assert snapshot.revision == f"main@sha1:{head}"
    committed = snapshot.read(snapshot.entries()["budget.yaml"])
    assert committed.startswith(b"# yaml-language-server")
    assert snapshot.entries()["strategies/gepetto.py"].size > 1000


def test_mirror_is_a_bare_repository_in_the_state_dir(repo: Repo, tmp_path: Path) -> None:
    mirrored = source(repo, tmp_path)
    mirrored.fetch()
    assert mirrored.mirror_path.parent == tmp_path / "mirrors"
    assert pygit2.Repository(str(mirrored.mirror_path)).is_bare


def test_symlinks_in_the_tree_are_entries_with_their_target(repo: Repo, tmp_path: Path) -> None:
    os.symlink("gepetto.py", repo.folder / "strategies" / "current.py")
    repo.commit("link")
    entry = source(repo, tmp_path).fetch().snapshot.entries()["strategies/current.py"]
    assert (entry.kind, entry.link_target) == ("link", "gepetto.py")


def test_new_commits_move_the_revision_forward(repo: Repo, tmp_path: Path) -> None:
    tracked = source(repo, tmp_path)
    first = tracked.fetch().snapshot.revision
    second_id = repo.commit("second")
    second = tracked.fetch()
    assert second.snapshot.revision == f"main@sha1:{second_id}" != first
    assert not second.rewrote_history


def test_history_rewrite_is_refused_unless_allowed(repo: Repo, tmp_path: Path) -> None:
    tracked = source(repo, tmp_path)
    repo.commit("will be rewritten")
    accepted_before = tracked.fetch().snapshot.commit_id
    git(repo.path, "reset", "-q", "--hard", "HEAD~1")
    rewritten = repo.commit("a different second commit")
    with pytest.raises(HistoryRewriteRefused) as refused:
        tracked.fetch()
    assert accepted_before in str(refused.value) and rewritten in str(refused.value)
    assert refused.value.reason == "HistoryRewrite"
    # Refusal is sticky: the accepted revision does not move behind the operator's back.
    with pytest.raises(HistoryRewriteRefused):
        tracked.fetch()
    allowed = source(repo, tmp_path, allow_history_rewrite=True).fetch()
    assert allowed.rewrote_history and allowed.snapshot.commit_id == rewritten


def test_missing_branch_and_folder_are_stalled_with_a_clear_message(repo: Repo,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(RevisionNotFound, match="branch 'release' does not exist"):
        source(repo, tmp_path, branch="release").fetch()
    with pytest.raises(RevisionNotFound, match="folder 'deploy' does not exist"):
        source(repo, tmp_path, folder="deploy").fetch()


def test_missing_repository_is_transient(tmp_path: Path) -> None:
    gone = GitSource(str(tmp_path / "nowhere"), "main", "desired-state", tmp_path / "m")
    with pytest.raises(TransientError, match="does not exist or is not reachable"):
        gone.fetch()


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]  # bound but never listening: connections are refused


def test_unreachable_http_remote_is_transient(tmp_path: Path, closed_port: int) -> None:
    remote = GitSource(f"http://127.0.0.1:{closed_port}/fleet.git", "main", "desired-state",
                       tmp_path / "m")
    with pytest.raises(TransientError, match="cannot fetch") as raised:
        remote.fetch()
    assert raised.value.reason == "SourceUnavailable"


def test_file_url_is_fetched_like_any_remote(repo: Repo, tmp_path: Path) -> None:
    remote = GitSource(f"file://{repo.path}", "main", "desired-state", tmp_path / "m")
    assert "budget.yaml" in remote.fetch().snapshot.entries()


def test_snapshot_at_any_revision(repo: Repo, tmp_path: Path) -> None:
    first = git(repo.path, "rev-parse", "HEAD")
    repo.write("extra.yaml", "x: 1\n")
    repo.commit("second")
    git(repo.path, "tag", "v1", first)
    tracked = source(repo, tmp_path)
    assert "extra.yaml" not in tracked.snapshot_at("v1").entries()
    assert "extra.yaml" not in tracked.snapshot_at(first).entries()
    assert "extra.yaml" in tracked.snapshot_at("main").entries()
    with pytest.raises(RevisionNotFound):
        tracked.snapshot_at("no-such-rev")


# Signatures: real keys, real signed commits from the git CLI.

def _ssh_key(directory: Path, name: str) -> Path:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)
    return key


def _ssh_commit(repo: Repo, key: Path, message: str) -> str:
    return _signed(repo, message, ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}.pub"])


def _signed(repo: Repo, message: str, config: list[str], env: dict[str, str] | None = None
            ) -> str:
    git(repo.path, "add", "-A")
    git(repo.path, *config, "commit", "-q", "--allow-empty", "-S", "-m", message, env=env)
    return git(repo.path, "rev-parse", "HEAD")


@pytest.fixture
def ssh_policy(tmp_path: Path) -> tuple[SignaturePolicy, Path]:
    keys = tmp_path / "keys"
    keys.mkdir()
    trusted = _ssh_key(keys, "release-bot")
    allowed = keys / "allowed_signers"
    allowed.write_text(f'release-bot@example.invalid namespaces="git" '
                       f"{(keys / 'release-bot.pub').read_text()}")
    return SignaturePolicy("ssh", allowed_signers=allowed), trusted


def test_ssh_signed_commit_by_an_allowed_key_is_accepted(
        repo: Repo, tmp_path: Path, ssh_policy: tuple[SignaturePolicy, Path]) -> None:
    policy, key = ssh_policy
    _ssh_commit(repo, key, "signed release")
    accepted = source(repo, tmp_path, signature_policy=policy).fetch()
    assert accepted.signer == "ssh:release-bot@example.invalid"


def test_unsigned_and_wrongly_signed_commits_are_refused_and_nothing_moves(
        repo: Repo, tmp_path: Path, ssh_policy: tuple[SignaturePolicy, Path]) -> None:
    policy, key = ssh_policy
    good = _ssh_commit(repo, key, "signed release")
    tracked = source(repo, tmp_path, signature_policy=policy)
    assert tracked.fetch().snapshot.commit_id == good

    unsigned = repo.commit("unsigned change")
    with pytest.raises(SignatureRefused, match=f"commit {unsigned} is not signed") as refused:
        tracked.fetch()
    assert refused.value.reason == "SignatureRefused"

    stranger = _ssh_key(tmp_path / "keys", "stranger")
    _ssh_commit(repo, stranger, "signed by someone else")
    with pytest.raises(SignatureRefused, match="not in"):
        tracked.fetch()
    accepted = pygit2.Repository(str(tracked.mirror_path)).references[
        "refs/reconciler/accepted/main"]
    assert str(accepted.target) == good


@pytest.fixture
def gpg_home(tmp_path: Path) -> Iterator[Path]:
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"rgpg-{os.getpid()}-{tmp_path.name[-12:]}"
    home.mkdir(mode=0o700)
    environment = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    "Release Bot <release-bot@example.invalid>", "ed25519", "sign", "never"],
                   env=environment, check=True, capture_output=True)
    yield home
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=environment, check=False)
    subprocess.run(["rm", "-rf", str(home)], check=False)


def test_openpgp_signed_commit_checked_against_a_dedicated_keyring(
        repo: Repo, tmp_path: Path, gpg_home: Path) -> None:
    environment = {"GNUPGHOME": str(gpg_home)}
    keyring = tmp_path / "allowed.gpg"
    exported = subprocess.run(["gpg", "--export"], env={**os.environ, **environment},
                              check=True, capture_output=True).stdout
    keyring.write_bytes(exported)
    listed = subprocess.run(["gpg", "--with-colons", "--list-keys"],
                            env={**os.environ, **environment}, check=True, capture_output=True,
                            text=True).stdout
    fingerprint = next(line.split(":")[9] for line in listed.splitlines()
                       if line.startswith("fpr:"))
    _signed(repo, "gpg signed", ["-c", "gpg.format=openpgp", "-c",
                                 f"user.signingkey={fingerprint}"], env=environment)

    accepted = source(repo, tmp_path, signature_policy=SignaturePolicy(
        "gpg", keyring=keyring, fingerprints=(fingerprint,))).fetch()
    assert accepted.signer == f"gpg:{fingerprint}"

    with pytest.raises(SignatureRefused, match="not among the allowed fingerprints"):
        source(repo, tmp_path / "other", signature_policy=SignaturePolicy(
            "gpg", keyring=keyring, fingerprints=("0" * 40,))).fetch()
    with pytest.raises(SignatureRefused, match="requires an SSH signature"):
        source(repo, tmp_path / "ssh", signature_policy=SignaturePolicy(
            "ssh", allowed_signers=keyring)).fetch()


def test_a_lock_file_left_by_a_killed_fetch_does_not_block_the_next(repo: Repo,
                                                                    tmp_path: Path) -> None:
    mirrored = source(repo, tmp_path)
    first = mirrored.fetch()
    # What kill -9 in the middle of a ref update leaves behind.
    stale = mirrored.mirror_path / "refs" / "reconciler" / "incoming" / "main.lock"
    stale.write_text("0" * 40 + "\n")
    (mirrored.mirror_path / "packed-refs.lock").write_text("")
    head = repo.commit("after the crash")
    again = source(repo, tmp_path).fetch()
    assert again.snapshot.revision == f"main@sha1:{head}" != first.snapshot.revision
    assert not stale.exists()


def test_a_fetch_waits_for_another_process_that_writes_the_mirror(repo: Repo,
                                                                  tmp_path: Path) -> None:
    mirrored = source(repo, tmp_path)
    mirrored.fetch()
    busy = mirrored.mirror_path / "refs" / "reconciler" / "incoming" / "main.lock"
    holder = os.open(f"{mirrored.mirror_path}.flock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another reconciler, mid-update
    busy.write_text("")
    finished = threading.Event()
    threading.Thread(target=lambda: (source(repo, tmp_path).fetch(), finished.set()),
                     daemon=True).start()
    assert not finished.wait(0.5), "it must not fetch while another holds the mirror"
    assert busy.exists(), "a live holder's lock file is not touched"
    busy.unlink()
    os.close(holder)
    assert finished.wait(30)
