"""Private repositories: credentials from files the settings name, through pygit2's
callbacks, against real servers on 127.0.0.1 (git http-backend behind Basic auth; sshd).

A refusal is Stalled (AuthenticationFailed), bounded in requests, and no message carries a
credential.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.errors import StalledError, classify
from reconciler.source.credentials import GitCredentials
from reconciler.source.git import AuthenticationFailed, GitSource, HostKeyUnverified
from reconciler.vocabulary import Reason
from tests.conftest import GIT_ENV, Repo, git
from tests.integration.git_servers import (
    HttpGitServer,
    SshGitServer,
    http_git_server,
    keygen,
    sshd,
    sshd_available,
)

TOKEN = "ghp_SECRETtoken0123456789"


@pytest.fixture
def bare(repo: Repo, tmp_path: Path) -> Path:
    """A bare clone of the example repository: what a Git server serves."""
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(served / "fleet.git")],
                   check=True, capture_output=True, timeout=60)
    return served / "fleet.git"


@pytest.fixture
def server(bare: Path) -> Iterator[HttpGitServer]:
    with http_git_server(bare.parent, "deploy", TOKEN) as served:
        yield served


def secret_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content + "\n")
    path.chmod(0o600)
    return path


def fetch(url: str, tmp_path: Path, credentials: GitCredentials | None) -> str:
    return GitSource(url, "main", "desired-state", tmp_path / "mirrors",
                     credentials=credentials).fetch().snapshot.revision


def test_https_token_from_a_file_fetches(server: HttpGitServer, repo: Repo,
                                         tmp_path: Path) -> None:
    credentials = GitCredentials("deploy", secret_file(tmp_path, "token", TOKEN))
    revision = fetch(server.url("fleet.git"), tmp_path, credentials)
    assert revision == f"main@sha1:{git(repo.path, 'rev-parse', 'HEAD')}"
    assert server.authorizations[-1] is not None  # it did have to authenticate


def test_a_wrong_token_is_stalled_and_not_asked_for_ever(server: HttpGitServer,
                                                          tmp_path: Path) -> None:
    credentials = GitCredentials("deploy", secret_file(tmp_path, "token", "wrong-" + TOKEN))
    with pytest.raises(AuthenticationFailed) as refused:
        fetch(server.url("fleet.git"), tmp_path, credentials)
    outcome = classify(refused.value)
    assert outcome.reason == Reason.AUTHENTICATION_FAILED and not outcome.transient
    assert server.url("fleet.git") in str(refused.value)
    assert TOKEN not in str(refused.value)
    assert server.refused <= 5  # bounded: the same answer is not offered again and again


def test_no_credentials_names_the_setting(server: HttpGitServer, tmp_path: Path) -> None:
    with pytest.raises(AuthenticationFailed, match="credentials"):
        fetch(server.url("fleet.git"), tmp_path, None)


def test_an_unreadable_credentials_file_is_stalled(server: HttpGitServer,
                                                   tmp_path: Path) -> None:
    with pytest.raises(StalledError, match="cannot read credentials file") as refused:
        fetch(server.url("fleet.git"), tmp_path, GitCredentials("deploy",
                                                                 tmp_path / "missing"))
    assert refused.value.reason == Reason.AUTHENTICATION_FAILED


def test_a_token_in_the_url_never_reaches_a_message(server: HttpGitServer,
                                                    tmp_path: Path) -> None:
    url = server.url("fleet.git", userinfo=f"deploy:wrong{TOKEN}@", query=f"?t={TOKEN}")
    with pytest.raises(AuthenticationFailed) as refused:
        fetch(url, tmp_path, None)
    assert TOKEN not in str(refused.value)
    assert f"127.0.0.1:{server.port}/fleet.git" in str(refused.value)


def test_a_token_in_the_url_still_works(server: HttpGitServer, tmp_path: Path) -> None:
    url = server.url("fleet.git", userinfo=f"deploy:{TOKEN}@")
    source = GitSource(url, "main", "desired-state", tmp_path / "mirrors")
    assert source.fetch().snapshot.revision.startswith("main@sha1:")
    assert TOKEN not in source.shown and TOKEN not in str(source.mirror_path)


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[tuple[SshGitServer, Path]]:
    if not sshd_available():  # not a skip: SSH fetching would go untested unnoticed
        pytest.fail("sshd is missing: scripts/host-tools.sh installs openssh-server")
    client_key = tmp_path / "client" / "id_ed25519"
    client_key.parent.mkdir()
    public = keygen(client_key)
    with sshd(tmp_path / "sshd", public) as server:
        yield server, client_key


def test_ssh_key_with_a_pinned_host_key_fetches(ssh_server: tuple[SshGitServer, Path],
                                                bare: Path, repo: Repo,
                                                tmp_path: Path) -> None:
    server, key = ssh_server
    credentials = GitCredentials(ssh_key=key, host_key=server.host_public_key)
    revision = fetch(server.url(bare), tmp_path, credentials)
    assert revision == f"main@sha1:{git(repo.path, 'rev-parse', 'HEAD')}"


def test_ssh_host_in_known_hosts_fetches(ssh_server: tuple[SshGitServer, Path], bare: Path,
                                         tmp_path: Path) -> None:
    server, key = ssh_server
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {server.host_public_key}\n")
    credentials = GitCredentials(ssh_key=key, known_hosts=known)
    assert fetch(server.url(bare), tmp_path, credentials).startswith("main@sha1:")


def test_an_unknown_ssh_host_is_refused(ssh_server: tuple[SshGitServer, Path], bare: Path,
                                        tmp_path: Path) -> None:
    server, key = ssh_server
    other = keygen(tmp_path / "other_host_key")  # a pin that is not this server's key
    for credentials in (GitCredentials(ssh_key=key, known_hosts=tmp_path / "empty"),
                        GitCredentials(ssh_key=key, host_key=other)):
        (tmp_path / "empty").write_text("")
        with pytest.raises(HostKeyUnverified, match=r"127\.0\.0\.1") as refused:
            fetch(server.url(bare), tmp_path, credentials)
        assert not classify(refused.value).transient


def test_an_ssh_key_the_server_does_not_know_is_stalled(
        ssh_server: tuple[SshGitServer, Path], bare: Path, tmp_path: Path) -> None:
    server, _ = ssh_server
    stranger = tmp_path / "stranger"
    keygen(stranger)
    credentials = GitCredentials(ssh_key=stranger, host_key=server.host_public_key)
    with pytest.raises(AuthenticationFailed):
        fetch(server.url(bare), tmp_path, credentials)


def test_the_settings_name_credentials_files_relative_to_themselves(
        server: HttpGitServer, tmp_path: Path) -> None:
    settings_dir = tmp_path / "etc"
    settings_dir.mkdir()
    secret_file(settings_dir, "git-token", TOKEN)
    config = settings_dir / "reconciler.yaml"
    config.write_text(f"repo: {server.url('fleet.git')}\nstateDir: {tmp_path / 'state'}\n"
                      "credentials: {username: deploy, passwordFile: git-token}\n")
    done = subprocess.run([sys.executable, "-m", "reconciler", "validate", "--config",
                           str(config)], capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path, env={**os.environ, **GIT_ENV})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid at main@sha1:" in done.stdout


def test_a_host_key_that_is_not_a_key_is_a_settings_error(tmp_path: Path) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text("repo: ssh://git@example.com/fleet.git\n"
                      "credentials:\n  sshKey: id_ed25519\n  hostKey: 'SHA256:abcdef'\n")
    done = subprocess.run([sys.executable, "-m", "reconciler", "status", "--config",
                           str(config)], capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path, env={**os.environ, **GIT_ENV})
    assert done.returncode == 1
    assert f"{config}:4:12:" in done.stderr and "[ssh-host-key]" in done.stderr
