"""The desired-state repository, through a bare mirror in the state dir (pygit2).

Fetches use explicit refspecs into a scratch ref; the branch is *accepted* only after the
checks a careful operator wants (it exists, it did not rewrite history, it is signed as the
policy says). Files are read from the accepted commit's tree: never a checkout.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pygit2

from reconciler.errors import ReconcilerError, StalledError, TransientError
from reconciler.redaction import redact, redact_text
from reconciler.source.credentials import GitCredentials
from reconciler.source.location import is_local_path
from reconciler.source.signatures import SignaturePolicy, verify_signature
from reconciler.source.snapshot import DEFAULT_TREE_LIMITS, Entry, TreeBudget, TreeLimits
from reconciler.vocabulary import Reason

_STREAM_ABOVE_BYTES = 1 << 20
_STREAM_TIMEOUT = 600.0
# git reading the mirror: no system or user configuration, no hooks, no prompts.
_GIT_ENVIRONMENT = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
                    "LANG": "C.UTF-8"}
_LINK_MODE = int(pygit2.enums.FileMode.LINK)
_TREE_MODE = int(pygit2.enums.FileMode.TREE)


class HistoryRewriteRefused(StalledError):
    reason = "HistoryRewrite"


class RevisionNotFound(StalledError):
    reason = "RevisionNotFound"


class AuthenticationFailed(StalledError):
    reason = Reason.AUTHENTICATION_FAILED


class HostKeyUnverified(StalledError):
    reason = "HostKeyUnverified"


# How libgit2 words a refusal of our credentials (or the lack of them), by transport.
_AUTH_REFUSALS = ("authentication", "credentials", "no callback set", "status code: 401",
                  "status code: 403", "authorization", "publickey")
# libgit2 asks again after a refusal; the same answer will not do better.
_MAX_CREDENTIAL_REQUESTS = 3


class _Callbacks(pygit2.RemoteCallbacks):
    """Answers libgit2's questions during one fetch: which credentials (from the settings'
    files, read now), and whether the server's key is the one we expect."""

    def __init__(self, credentials: GitCredentials | None, remote: str) -> None:
        super().__init__()
        self._credentials = credentials
        self._remote = remote  # already redacted: this is what messages say
        self._requests = 0
        self.host_refused: str | None = None

    def credentials(self, url: str, username_from_url: str | None,
                    allowed_types: pygit2.enums.CredentialType
                    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        allowed = pygit2.enums.CredentialType
        self._requests += 1
        if self._credentials is None:
            raise AuthenticationFailed(f"{self._remote} requires authentication: name the "
                                       "credentials files in reconciler.yaml (credentials:)")
        if self._requests > _MAX_CREDENTIAL_REQUESTS:
            raise AuthenticationFailed(f"{self._remote} refused the credentials from "
                                       "reconciler.yaml")
        user = self._credentials.username or username_from_url or "git"
        if allowed_types & allowed.USERNAME:
            return pygit2.Username(user)
        if allowed_types & allowed.SSH_KEY and self._credentials.ssh_key is not None:
            key = self._credentials.ssh_key
            public = key.with_name(key.name + ".pub")
            return pygit2.Keypair(user, str(public) if public.exists() else None, str(key),
                                  self._credentials.passphrase())
        if allowed_types & allowed.USERPASS_PLAINTEXT \
                and self._credentials.password_file is not None:
            return pygit2.UserPass(user, self._credentials.password())
        raise AuthenticationFailed(f"{self._remote} asks for credentials reconciler.yaml does "
                                   f"not name ({allowed_types!r}): set sshKey for SSH, "
                                   "passwordFile for HTTPS")

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        # TLS: libgit2 verified the chain against the system's CAs. SSH: ``valid`` says the
        # key is in the known_hosts we wrote for this fetch (the settings' file and pin).
        if not valid:
            self.host_refused = host.decode(errors="replace")
        return valid


def _ssh_host(url: str) -> tuple[str, int | None] | None:
    """(host, port) of an SSH remote (``ssh://`` or scp-like ``user@host:path``), else None."""
    if url.startswith("ssh://"):
        parts = urlsplit(url)
        return (parts.hostname or "", parts.port)
    if "://" not in url and not is_local_path(url):
        return (url.split(":", 1)[0].rpartition("@")[2], None)
    return None


def format_revision(branch: str, commit_id: str) -> str:
    return f"{branch}@sha1:{commit_id}"


class GitSnapshot:
    """The folder's files in one commit."""

    def __init__(self, repo: pygit2.Repository, commit: pygit2.Commit, ref_name: str,
                 folder: str, limits: TreeLimits = DEFAULT_TREE_LIMITS) -> None:
        self._repo = repo
        self._limits = limits
        self.commit_id = str(commit.id)
        self._revision = format_revision(ref_name, self.commit_id)
        self._folder = folder.strip("/")
        self._entries: dict[str, Entry] | None = None
        try:
            folder_object = commit.tree[self._folder] if self._folder else commit.tree
        except KeyError:
            raise RevisionNotFound(f"folder {self._folder!r} does not exist in "
                                   f"{self._revision}") from None
        if int(folder_object.filemode) != _TREE_MODE:
            raise RevisionNotFound(f"{self._folder!r} is not a folder in {self._revision}")
        self._tree = repo[folder_object.id].peel(pygit2.Tree)

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def display_prefix(self) -> str:
        return f"{self._folder}/" if self._folder else ""

    @property
    def tree_id(self) -> str:
        """The folder's tree: equal ids, equal desired state (whatever the commit)."""
        return str(self._tree.id)

    def entries(self) -> Mapping[str, Entry]:
        if self._entries is None:
            self._entries = self._walk()
        return self._entries

    def read(self, entry: Entry) -> bytes:
        data: bytes = self._repo[entry.oid].peel(pygit2.Blob).data
        return data

    def copy_to(self, entry: Entry, destination: Path) -> None:
        """Small blobs through libgit2; large ones through ``git cat-file``, which streams
        a blob from its loose or packed object where libgit2 inflates it whole (a 150 MB
        module raised a pass's memory tenfold)."""
        if entry.size <= _STREAM_ABOVE_BYTES:
            destination.write_bytes(self.read(entry))
            return
        with open(destination, "wb") as stream:
            done = subprocess.run(["git", "--git-dir", self._repo.path, "cat-file", "blob",
                                   entry.oid], stdout=stream, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, timeout=_STREAM_TIMEOUT,
                                  check=False, env=_GIT_ENVIRONMENT)
        if done.returncode != 0:
            raise OSError(f"git cat-file blob {entry.oid} failed: "
                          f"{done.stderr.decode(errors='replace').strip()}")

    def _walk(self) -> dict[str, Entry]:
        """Every file and link under the folder: a loop over a stack of trees, bounded by
        the tree limits (sizes come from object headers; no blob is read but links')."""
        odb = self._repo.odb
        budget = TreeBudget(self._limits, self.display_prefix)
        entries: dict[str, Entry] = {}
        pending: list[tuple[pygit2.Tree, str, int]] = [(self._tree, "", 1)]
        while pending:
            tree, prefix, depth = pending.pop()
            budget.folder(prefix, depth)
            for item in tree:
                path = prefix + str(item.name)
                mode = int(item.filemode)
                if mode == _TREE_MODE:
                    pending.append((self._repo[item.id].peel(pygit2.Tree), path + "/",
                                    depth + 1))
                elif mode == _LINK_MODE:
                    _, size = odb.read_header(item.id)
                    budget.link(path, size)
                    target = self._repo[item.id].peel(pygit2.Blob).data.decode(
                        "utf-8", "surrogateescape")
                    entries[path] = Entry(path, "link", str(item.id), len(target), target)
                elif item.type_str == "blob":
                    _, size = odb.read_header(item.id)
                    budget.entry(path, size)
                    entries[path] = Entry(path, "file", str(item.id), size)
        return dict(sorted(entries.items()))


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a fetch accepted: the snapshot and who signed it (when a policy is set)."""

    snapshot: GitSnapshot
    signer: str | None
    rewrote_history: bool


class GitSource:
    """A repository (local path or any URL libgit2 fetches) mirrored under ``mirror_root``."""

    def __init__(self, url: str, branch: str, folder: str, mirror_root: Path, *,
                 allow_history_rewrite: bool = False,
                 signature_policy: SignaturePolicy | None = None,
                 credentials: GitCredentials | None = None) -> None:
        self.url = str(Path(url).resolve()) if is_local_path(url) else url
        self.shown = redact(self.url)  # what every message names: never a credential
        self.credentials = credentials
        self.branch = branch
        self.folder = folder
        self.allow_history_rewrite = allow_history_rewrite
        self.signature_policy = signature_policy
        name = hashlib.sha256(self.shown.encode()).hexdigest()[:16]  # one mirror per repo
        self.mirror_path = mirror_root / f"{name}.git"
        self._repo: pygit2.Repository | None = None

    @property
    def _incoming_ref(self) -> str:
        return f"refs/reconciler/incoming/{self.branch}"

    @property
    def _accepted_ref(self) -> str:
        return f"refs/reconciler/accepted/{self.branch}"

    def _mirror(self) -> pygit2.Repository:
        if self._repo is None:
            if (self.mirror_path / "HEAD").exists():
                self._repo = pygit2.Repository(str(self.mirror_path))
            else:
                self.mirror_path.parent.mkdir(parents=True, exist_ok=True)
                self._repo = pygit2.init_repository(str(self.mirror_path), bare=True)
        return self._repo

    def _fetch(self, refspecs: list[str]) -> None:
        """Fetch in a child process: libgit2 holds every object of a fetch in memory while
        it packs, so a 150 MB blob in the repository would otherwise stay in the daemon's
        peak memory for good. The child is reconciler's own code; errors come back typed."""
        if is_local_path(self.url) and not os.path.isdir(self.url):
            raise TransientError(f"repository {self.shown} does not exist or is not reachable",
                                 reason="SourceUnavailable")
        self.in_child("reconciler.source.git", {"refspecs": refspecs}, what="fetch",
                      subject=self.shown, timeout=_FETCH_TIMEOUT_SECONDS,
                      errors=_FETCH_ERRORS, reason="SourceUnavailable")

    def in_child(self, module: str, task: Mapping[str, object], *, what: str, subject: str,
                 timeout: int, errors: Mapping[str, type[ReconcilerError]],
                 reason: str) -> None:
        """Run ``python -m <module>`` (whose main is :func:`serve_child`) on this source and
        ``task``: credentials go as file paths on stdin, read in the child, never in argv or
        the environment; its typed failure is raised here (``errors``: the types it may
        name), any other ending as a TransientError with ``reason``."""
        request = {"url": self.url, "branch": self.branch, "folder": self.folder,
                   "mirror": str(self.mirror_path), **task,
                   "credentials": None if self.credentials is None else {
                       name: None if value is None else str(value)
                       for name, value in asdict(self.credentials).items()}}
        try:
            done = subprocess.run([sys.executable, "-m", module],
                                  input=json.dumps(request), capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise TransientError(f"{what}ing {subject} did not finish within "
                                 f"{timeout // 60} minutes", reason=reason) from None
        if done.returncode == 0:
            return
        try:
            failure = json.loads(done.stdout.strip().splitlines()[-1])
            kind, message = errors[failure["type"]], str(failure["message"])
        except (ValueError, IndexError, KeyError, TypeError):
            kind = TransientError
            message = (f"cannot {what} {subject}: the {what} ended with "
                       f"{done.returncode}: {redact_text(done.stderr.strip()[-300:])}")
        raise kind(message, reason=reason if kind is TransientError else None)

    def _fetch_here(self, refspecs: list[str]) -> None:
        """The fetch itself, with credentials and host keys: runs in the fetch's child."""
        ssh = _ssh_host(self.url)
        if ssh is not None:
            self._trust_host_keys(*ssh)
        callbacks = _Callbacks(self.credentials, self.shown)
        try:
            self._mirror().remotes.create_anonymous(self.url).fetch(refspecs,
                                                                     callbacks=callbacks)
        except pygit2.GitError as error:
            said = redact_text(str(error))
            if callbacks.host_refused is not None:
                raise HostKeyUnverified(
                    f"cannot fetch {self.shown}: the host key of {callbacks.host_refused} is "
                    "not in credentials.knownHosts and does not match credentials.hostKey "
                    f"({said})") from None
            if any(word in said.lower() for word in _AUTH_REFUSALS):
                raise AuthenticationFailed(f"{self.shown} refused the credentials: {said}; "
                                           "check credentials in reconciler.yaml") from None
            raise TransientError(f"cannot fetch {self.shown}: {said}",
                                 reason="SourceUnavailable") from None

    def _remote_tip(self, ref: str) -> pygit2.Oid | None:
        """The remote's ``ref`` without fetching a single object (a listing of its refs);
        None when it cannot be listed cheaply (the fetch then says why)."""
        ssh = _ssh_host(self.url)
        if ssh is not None:
            self._trust_host_keys(*ssh)
        try:
            heads = self._mirror().remotes.create_anonymous(self.url).list_heads(
                callbacks=_Callbacks(self.credentials, self.shown))
        except pygit2.GitError:
            return None
        return next((head.oid for head in heads if head.name == ref), None)

    def _trust_host_keys(self, host: str, port: int | None) -> None:
        """libgit2 checks SSH host keys against ``<home>/.ssh/known_hosts``: point its home
        at a folder of ours holding exactly the hosts the settings trust (their knownHosts,
        else the daemon user's ~/.ssh/known_hosts, plus a pinned hostKey)."""
        credentials = self.credentials or GitCredentials()
        if credentials.known_hosts is None:
            own = Path.home() / ".ssh" / "known_hosts"
            if own.is_file():
                credentials = GitCredentials(credentials.username, credentials.password_file,
                                             credentials.ssh_key,
                                             credentials.ssh_key_passphrase_file, own,
                                             credentials.host_key)
        home = self.mirror_path.parent / "ssh-home"
        (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
        known = home / ".ssh" / "known_hosts"
        temporary = known.with_name(".known_hosts.tmp")
        temporary.write_text(credentials.known_hosts_lines(host, port))
        temporary.replace(known)
        pygit2.option(pygit2.enums.Option.SET_HOMEDIR, str(home))

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Every process of ours that writes the mirror holds this flock, which dies with its
        holder; so a git ``*.lock`` file found while holding it was left by a process killed
        mid-update (``kill -9`` during a fetch), and would block every fetch after it."""
        self.mirror_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(f"{self.mirror_path}.flock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if self.mirror_path.is_dir():
                for leftover in [*self.mirror_path.glob("*.lock"),
                                 *(self.mirror_path / "refs").rglob("*.lock")]:
                    leftover.unlink(missing_ok=True)
            yield
        finally:
            os.close(descriptor)

    def fetch(self) -> Accepted:
        """Fetch the branch and accept its tip, or raise with the reason it was refused."""
        with self._exclusive():
            return self._fetch_and_accept()

    def peek(self) -> Accepted:
        """The branch's tip as :meth:`fetch` would accept it (it descends, it is signed),
        without accepting it: the daemon looks at a new commit while a pass is under way
        (supersede.py) and the pass's own fetch accepts it. Its own incoming ref, so the
        two never race on one."""
        with self._exclusive():
            return self._fetch_and_accept(f"refs/reconciler/peek/{self.branch}", accept=False)

    def _fetch_and_accept(self, incoming_ref: str | None = None, *,
                          accept: bool = True) -> Accepted:
        incoming_ref = incoming_ref or self._incoming_ref
        repo = self._mirror()
        stale = repo.references.get(incoming_ref)
        if stale is not None:
            stale.delete()
        tip = self._remote_tip(f"refs/heads/{self.branch}")
        if tip is not None and tip in repo:
            # Nothing new: the commit (and, packs being atomic, all it needs) is here.
            repo.references.create(incoming_ref, tip, force=True)
        else:
            self._fetch([f"+refs/heads/{self.branch}:{incoming_ref}"])
        incoming = repo.references.get(incoming_ref)
        if incoming is None:
            raise RevisionNotFound(f"branch {self.branch!r} does not exist in {self.shown}")
        commit = repo[incoming.target].peel(pygit2.Commit)
        accepted = repo.references.get(self._accepted_ref)
        rewrote = False
        if accepted is not None and accepted.target != commit.id \
                and not repo.descendant_of(commit.id, accepted.target):
            if not self.allow_history_rewrite:
                raise HistoryRewriteRefused(
                    f"branch {self.branch!r} moved from {accepted.target} to {commit.id}, "
                    "which does not descend from it (a history rewrite); the fleet stays at "
                    f"{accepted.target}. Push a commit on top of it, or set "
                    "allowHistoryRewrite: true to accept rewrites")
            rewrote = True
        signer = self._check_signature(repo, commit)
        if accept:
            repo.references.create(self._accepted_ref, commit.id, force=True)
        return Accepted(GitSnapshot(repo, commit, self.branch, self.folder), signer, rewrote)

    def snapshot_at(self, rev: str) -> GitSnapshot:
        """Any revision (branch, tag, sha) for ``validate --rev``: no acceptance checks."""
        name = rev
        if is_local_path(self.url):
            try:
                repo = pygit2.Repository(self.url)
            except pygit2.GitError as error:
                raise TransientError(f"cannot open repository {self.shown}: {error}",
                                     reason="SourceUnavailable") from None
        else:
            with self._exclusive():
                repo = self._mirror()
                self._fetch(["+refs/heads/*:refs/reconciler/validate/heads/*",
                             "+refs/tags/*:refs/reconciler/validate/tags/*"])
            for prefix in ("refs/reconciler/validate/heads/", "refs/reconciler/validate/tags/"):
                if repo.references.get(prefix + rev) is not None:
                    rev = prefix + rev
                    break
        try:
            commit = repo.revparse_single(rev).peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError):
            raise RevisionNotFound(f"revision {rev!r} does not exist in {self.shown}") from None
        return GitSnapshot(repo, commit, name, self.folder)

    def _check_signature(self, repo: pygit2.Repository, commit: pygit2.Commit) -> str | None:
        if self.signature_policy is None:
            return None
        signature, payload = commit.gpg_signature
        return verify_signature(self.signature_policy, str(commit.id), signature, payload)


_FETCH_TIMEOUT_SECONDS = 30 * 60
_FETCH_ERRORS: dict[str, type[ReconcilerError]] = {
    "AuthenticationFailed": AuthenticationFailed, "HostKeyUnverified": HostKeyUnverified,
    "TransientError": TransientError}


def _credentials(fields: Mapping[str, str | None]) -> GitCredentials:
    def path(name: str) -> Path | None:
        value = fields.get(name)
        return None if value is None else Path(value)

    return GitCredentials(fields.get("username"), path("password_file"), path("ssh_key"),
                          path("ssh_key_passphrase_file"), path("known_hosts"),
                          fields.get("host_key"))


def serve_child(work: Callable[[GitSource, dict[str, Any]], None],
                errors: Mapping[str, type[ReconcilerError]]) -> int:
    """The child's side of :meth:`GitSource.in_child`: the request from stdin, ``work`` on
    its source; a typed failure is the last line of stdout (a type not in ``errors`` is
    sent as a TransientError)."""
    request = json.loads(sys.stdin.read())
    credentials = request["credentials"]
    source = GitSource(request["url"], request["branch"], request["folder"],
                       Path(request["mirror"]).parent,
                       credentials=None if credentials is None else _credentials(credentials))
    source.mirror_path = Path(request["mirror"])
    try:
        work(source, request)
    except ReconcilerError as error:
        kind = type(error).__name__ if type(error).__name__ in errors else "TransientError"
        print(json.dumps({"type": kind, "message": str(error)}))
        return 1
    return 0


def _fetch_child() -> int:
    """``python -m reconciler.source.git``: one fetch (a JSON request on stdin)."""
    return serve_child(lambda source, request: source._fetch_here(request["refspecs"]),
                       _FETCH_ERRORS)


if __name__ == "__main__":
    sys.exit(_fetch_child())
