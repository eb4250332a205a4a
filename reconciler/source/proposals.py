"""Commits the reconciler proposes: made in the bare mirror (never a checkout), pushed to a
new branch of the repository, never to the tracked branch.

The push runs in a child process (``python -m reconciler.source.proposals``), like the fetch,
with the same credentials (files named in ``reconciler.yaml``, read in the child) and the
same host-key checks; no secret is in argv, the environment, a log or an error.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

import pygit2

from reconciler.errors import ReconcilerError, StalledError, TransientError
from reconciler.redaction import redact_text
from reconciler.source.git import (
    _AUTH_REFUSALS,
    _GIT_ENVIRONMENT,
    AuthenticationFailed,
    GitSnapshot,
    GitSource,
    HostKeyUnverified,
    _Callbacks,
    _ssh_host,
    serve_child,
)
from reconciler.source.location import is_local_path

_PUSH_TIMEOUT_SECONDS = 10 * 60
_BASE_REF = "refs/reconciler/proposals/base"
_PROPOSED_PREFIX = "refs/reconciler/proposals/heads/"
_REMOTE_PREFIX = "refs/reconciler/proposals/remote/"


class PushRejected(StalledError):
    """The remote refused the branch (it exists with other commits, a hook or a protection
    rule said no): nothing was pushed."""

    reason = "PushRejected"


class BranchExists(StalledError):
    reason = "BranchExists"


_PUSH_ERRORS: dict[str, type[ReconcilerError]] = {
    "AuthenticationFailed": AuthenticationFailed, "HostKeyUnverified": HostKeyUnverified,
    "PushRejected": PushRejected, "TransientError": TransientError}


class _PushCallbacks(_Callbacks):
    def __init__(self, credentials: object, remote: str) -> None:
        super().__init__(credentials, remote)  # type: ignore[arg-type]
        self.refused: list[str] = []

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message is not None:  # libgit2: None when the remote accepted the update
            self.refused.append(f"{refname}: {message}")


def valid_branch(name: str) -> bool:
    """A name git accepts for a new branch: ``git check-ref-format --branch``'s rules
    (libgit2's, and its refusal of HEAD and of a leading '-', which any git command naming
    the branch later would read as an option)."""
    return not name.startswith("-") and name != "HEAD" \
        and bool(pygit2.reference_is_valid_name(f"refs/heads/{name}"))


def same_branch(name: str, other: str) -> bool:
    """Whether two names may be one branch on the remote: on a case-insensitive file system
    (a bare repository on macOS or Windows) MAIN is stored in main's file."""
    return name.casefold() == other.casefold()


class Workspace:
    """Makes commits on top of the tracked branch in ``source``'s mirror and pushes them."""

    def __init__(self, source: GitSource, author_name: str, author_email: str) -> None:
        self.source = source
        self._author = (author_name, author_email)

    def _repo(self) -> pygit2.Repository:
        return self.source._mirror()

    def tip(self) -> str:
        """Fetch the tracked branch (into a ref of ours, not the daemon's accepted one) and
        return its commit."""
        with self.source._exclusive():
            tip = self.source._remote_tip(f"refs/heads/{self.source.branch}")
            if tip is not None and tip in self._repo():  # nothing new: no fetch (a child)
                self._repo().references.create(_BASE_REF, tip, force=True)
            else:
                self.source._fetch([f"+refs/heads/{self.source.branch}:{_BASE_REF}"])
        reference = self._repo().references.get(_BASE_REF)
        if reference is None:
            raise StalledError(f"branch {self.source.branch!r} does not exist in "
                               f"{self.source.shown}", reason="RevisionNotFound")
        return str(reference.target)

    def snapshot(self, commit_id: str) -> GitSnapshot:
        commit = self._repo()[commit_id].peel(pygit2.Commit)
        return GitSnapshot(self._repo(), commit, self.source.branch, self.source.folder)

    def read(self, commit_id: str, path: str) -> bytes | None:
        """A file of a commit by its repository path, or None."""
        tree = self._repo()[commit_id].peel(pygit2.Commit).tree
        try:
            entry = tree[path]
        except KeyError:
            return None
        blob = self._repo()[entry.id]
        return blob.data if isinstance(blob, pygit2.Blob) else None

    def first_parents(self, commit_id: str, limit: int) -> list[str]:
        """``commit_id`` and its first-parent ancestors, newest first, at most ``limit``."""
        found: list[str] = []
        commit = self._repo()[commit_id].peel(pygit2.Commit)
        while len(found) < limit:
            found.append(str(commit.id))
            if not commit.parents:
                break
            commit = commit.parents[0]
        return found

    def touches(self, commit_id: str, paths: set[str]) -> bool:
        """Whether a commit changed any of ``paths`` (repository paths) against its first
        parent (a root commit: whether it has them)."""
        commit = self._repo()[commit_id].peel(pygit2.Commit)
        if not commit.parents:
            return any(self.read(commit_id, path) is not None for path in paths)
        diff = self._repo().diff(commit.parents[0], commit)
        return any(delta.new_file.path in paths or delta.old_file.path in paths
                   for delta in diff.deltas)

    def changes(self, commit_id: str) -> dict[str, str | None] | None:
        """What a commit changes against its parent: repository path -> its new blob (None:
        deleted); None for a root or merge commit (not one change on top of one tip)."""
        commit = self._repo()[commit_id].peel(pygit2.Commit)
        if len(commit.parents) != 1:
            return None
        diff = self._repo().diff(commit.parents[0], commit)
        return {delta.new_file.path if delta.status != pygit2.enums.DeltaStatus.DELETED
                else delta.old_file.path:
                None if delta.status == pygit2.enums.DeltaStatus.DELETED
                else str(delta.new_file.id) for delta in diff.deltas}

    def message(self, commit_id: str) -> str:
        return str(self._repo()[commit_id].peel(pygit2.Commit).message)

    def commit(self, parent: str, changes: Mapping[str, bytes], message: str) -> str:
        """A commit on ``parent`` whose tree differs only by ``changes`` (repository path ->
        bytes; each file keeps its mode). Referenced by no branch yet."""
        repo = self._repo()
        base = repo[parent].peel(pygit2.Commit)
        index = pygit2.Index()
        index.read_tree(base.tree)
        for path, data in changes.items():
            mode = index[path].mode if path in index else pygit2.enums.FileMode.BLOB
            index.add(pygit2.IndexEntry(path, repo.create_blob(data), mode))
        return self._write(index.write_tree(repo), [base.id], message)

    def revert(self, bad: str, onto: str, message: str) -> str | None:
        """A commit on ``onto`` undoing ``bad`` (against its first parent when it is a merge);
        None when it does not apply cleanly or changes nothing (already undone)."""
        repo = self._repo()
        bad_commit = repo[bad].peel(pygit2.Commit)
        onto_commit = repo[onto].peel(pygit2.Commit)
        if not bad_commit.parents:
            return None
        index = repo.revert_commit(bad_commit, onto_commit,
                                   mainline=1 if len(bad_commit.parents) > 1 else 0)
        if index.conflicts is not None:
            return None
        tree = index.write_tree(repo)
        if tree == onto_commit.tree.id:
            return None
        return self._write(tree, [onto_commit.id], message)

    def _write(self, tree: pygit2.Oid, parents: list[pygit2.Oid], message: str) -> str:
        signature = pygit2.Signature(*self._author)
        return str(self._repo().create_commit(None, signature, signature, message, tree,
                                              parents))

    def remote_branch(self, branch: str) -> str | None:
        """The branch's commit on the remote (a listing of its refs), or None."""
        tip = self.source._remote_tip(f"refs/heads/{branch}")
        return None if tip is None else str(tip)

    def fetch_branch(self, branch: str) -> str | None:
        """Fetch a remote branch (to compare with what we would push); None if it is gone."""
        ref = _REMOTE_PREFIX + branch
        with self.source._exclusive():
            stale = self._repo().references.get(ref)
            if stale is not None:
                stale.delete()
            self.source._fetch([f"+refs/heads/{branch}:{ref}"])
        found = self._repo().references.get(ref)
        return None if found is None else str(found.target)

    def push(self, commit_id: str, branch: str) -> None:
        """Create ``branch`` on the remote at ``commit_id``; never a force push, never the
        tracked branch. Raises PushRejected, AuthenticationFailed or TransientError."""
        if same_branch(branch, self.source.branch):
            raise PushRejected(f"refusing to push to the tracked branch {branch!r}")
        if not valid_branch(branch):
            raise PushRejected(f"{branch!r} is not a valid branch name")
        local = _PROPOSED_PREFIX + branch
        with self.source._exclusive():
            self._repo().references.create(local, pygit2.Oid(hex=commit_id), force=True)
        if is_local_path(self.source.url):  # no credentials, no libgit2: no child needed
            _push_local(self.source, f"{local}:refs/heads/{branch}")
            return
        self.source.in_child("reconciler.source.proposals",
                             {"refspec": f"{local}:refs/heads/{branch}"}, what="push",
                             subject=f"{branch} to {self.source.shown}",
                             timeout=_PUSH_TIMEOUT_SECONDS, errors=_PUSH_ERRORS,
                             reason="PushFailed")


def _push_local(source: GitSource, refspec: str) -> None:
    """To a repository on this machine, the git CLI: libgit2's local transport cannot push
    to a repository with a work tree and runs no hooks. No credentials are involved."""
    try:
        done = subprocess.run(["git", "--git-dir", str(source.mirror_path), "push", "--quiet",
                               "--porcelain", source.url, refspec], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, env=_GIT_ENVIRONMENT,
                              timeout=_PUSH_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise TransientError(f"pushing to {source.shown} did not finish", reason="PushFailed") \
            from None
    if done.returncode == 0:
        return
    said = redact_text(" ".join((done.stdout + " " + done.stderr).split())[-500:])
    if "rejected" in said or "denied" in said:
        raise PushRejected(f"{source.shown} refused the push ({said})")
    raise TransientError(f"cannot push to {source.shown}: {said}", reason="PushFailed")


def _push_here(source: GitSource, refspec: str) -> None:
    """The push itself, with credentials and host keys: runs in the push's child."""
    ssh = _ssh_host(source.url)
    if ssh is not None:
        source._trust_host_keys(*ssh)
    callbacks = _PushCallbacks(source.credentials, source.shown)
    try:
        source._mirror().remotes.create_anonymous(source.url).push([refspec],
                                                                   callbacks=callbacks)
    except pygit2.GitError as error:
        said = redact_text(str(error))
        if callbacks.host_refused is not None:
            raise HostKeyUnverified(f"cannot push to {source.shown}: the host key of "
                                    f"{callbacks.host_refused} is not trusted ({said})") \
                from None
        if any(word in said.lower() for word in _AUTH_REFUSALS):
            raise AuthenticationFailed(f"{source.shown} refused the credentials: {said}; "
                                       "check credentials in reconciler.yaml") from None
        if any(word in said.lower() for word in ("rejected", "non-fast-forward",
                                                 "fast forward", "denied", "hook")):
            raise PushRejected(f"{source.shown} refused the push ({said})") from None
        raise TransientError(f"cannot push to {source.shown}: {said}",
                             reason="PushFailed") from None
    if callbacks.refused:
        raise PushRejected(f"{source.shown} refused the push: "
                           f"{redact_text('; '.join(callbacks.refused))}")


def _push_child() -> int:
    """``python -m reconciler.source.proposals``: one push (a JSON request on stdin)."""
    return serve_child(lambda source, request: _push_here(source, request["refspec"]),
                       _PUSH_ERRORS)


if __name__ == "__main__":
    sys.exit(_push_child())
