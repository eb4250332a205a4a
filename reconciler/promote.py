"""``reconciler promote``: what a training pipeline calls instead of a person editing a
sha256 into YAML. Fetch and verify the artifact, run the Model's gate (its verdict is
remembered, so the merge flips at once), change the Model document's ``artifact.uri`` and
``artifact.sha256`` (and nothing else) in a commit on a new branch with the evidence in its
message, push it, and open a pull request when a forge is configured.

Also the one way any proposal (a promotion here, a revert from :mod:`reconciler.feedback`)
reaches the repository: :func:`propose` pushes a branch and opens its pull request, and a
retry finds both instead of making a second of either.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler.app import git_source
from reconciler.desired.cache import DesiredCache
from reconciler.desired.edit import EditError, set_scalars
from reconciler.desired.loader import cache_salt, load_desired
from reconciler.digests import Progress
from reconciler.errors import ReconcilerError, StalledError
from reconciler.forge import Forge, PullRequest, forge_client
from reconciler.journal import Journal
from reconciler.places import ContentStore
from reconciler.prcheck import GateRun, run_gate
from reconciler.redaction import redact
from reconciler.settings import Settings
from reconciler.source.proposals import BranchExists, Workspace, same_branch, valid_branch
from reconciler.vocabulary import JournalAction, Phase

EXIT_PROPOSED, EXIT_REJECTED, EXIT_INCONCLUSIVE, EXIT_ERROR = 0, 1, 2, 3
_GATE_EXITS = {"passed": EXIT_PROPOSED, "rejected": EXIT_REJECTED,
               "inconclusive": EXIT_INCONCLUSIVE}
MAX_EVIDENCE_CHARS = 4000  # of the gate's evidence, in a commit message


@dataclass(frozen=True, slots=True)
class Proposed:
    branch: str
    commit: str
    pull_request: PullRequest | None
    reused: bool  # the branch was on the remote already, from an earlier try


@dataclass(slots=True)
class Promotion:
    """What ``promote`` did, for ``-o json|yaml`` (docs/output.md): filled in as it goes,
    so that a run that stops early says how far it got. ``outcome`` is ``proposed``,
    ``unchanged`` (the Model declares this artifact already), ``dry-run``, ``rejected``,
    ``inconclusive`` or ``error``."""

    model: str
    artifact: str  # redacted: it may be shown anywhere
    exit_code: int = EXIT_ERROR
    outcome: str = "error"
    error: str | None = None
    gate: GateRun | None = None
    branch: str | None = None
    commit: str | None = None
    reused: bool = False
    pull_request: PullRequest | None = None
    diff: str | None = None

    def to_json(self) -> dict[str, Any]:
        gate = self.gate
        return {"model": self.model, "artifact": self.artifact,
                "sha256": gate.digest if gate else None, "outcome": self.outcome,
                "error": self.error, "gate": None if gate is None else {
                    "outcome": gate.outcome, "reason": gate.reason, "message": gate.message,
                    "remembered": gate.remembered, "revision": gate.revision,
                    "evidence": gate.evidence or {}},
                "branch": self.branch, "commit": self.commit, "reused": self.reused,
                "pullRequest": None if self.pull_request is None else {
                    "number": self.pull_request.number, "url": self.pull_request.url,
                    "created": self.pull_request.created},
                "diff": self.diff}


def workspace(settings: Settings) -> Workspace:
    return Workspace(git_source(settings), settings.proposals.author_name,
                     settings.proposals.author_email)


def forge_of(settings: Settings, stop: threading.Event | None = None) -> Forge | None:
    return None if settings.forge is None else forge_client(settings.forge, stop=stop)


def propose(space: Workspace, forge: Forge | None, *, branch: str, base: str, commit: str,
            title: str, body: str,
            journal: Journal | None = None, say: Callable[[str], None] = lambda text: None
            ) -> Proposed:
    """Push ``commit`` as the new ``branch`` and open a pull request into ``base``. A branch
    already on the remote is reused when its commit changes exactly what ``commit`` changes
    (an earlier try pushed it, perhaps onto an older tip), else refused with
    :class:`BranchExists` (its name is predictable: a planted branch must not get a pull
    request titled as ours); an open pull request for it is found, not
    duplicated. The journal hears of the push before the pull request is asked for."""
    reused = False
    if space.remote_branch(branch) is None:
        space.push(commit, branch)
        say(f"pushed branch {branch} (commit {commit[:12]}) to {space.source.shown}")
    else:
        existing = space.fetch_branch(branch)
        if existing is None or space.changes(existing) != space.changes(commit):
            raise BranchExists(f"branch {branch!r} already exists on {space.source.shown} "
                               "and holds a different change: delete it, or choose another "
                               "name (--head)")
        commit, reused = existing, True
        say(f"branch {branch} is already on {space.source.shown} (commit {commit[:12]}): "
            "reusing it")
    if journal is not None:
        journal.record(JournalAction.PROPOSE, Phase.INFO,
                       detail={"branch": branch, "commit": commit, "step": "pushed"})
    pull = None
    if forge is not None:
        pull = forge.open_pull_request(branch, base, title, body)
        if journal is not None:
            journal.record(JournalAction.PROPOSE, Phase.DONE,
                           detail={"branch": branch, "commit": commit, "step": "opened",
                                   "pullRequest": pull.url})
    return Proposed(branch, commit, pull, reused)


def _digest(text: str | None) -> str | None:
    if text is None:
        return None
    digest = text.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise StalledError(f"--sha256 {text!r}: a sha256 is 64 lowercase hex digits, "
                           "optionally after 'sha256:'", reason="InvalidDigest")
    return digest


def _message(run: GateRun, model: str, old: str, uri: str) -> str:
    evidence = json.dumps(run.evidence or {}, sort_keys=True, separators=(",", ":"),
                          default=str)
    if len(evidence) > MAX_EVIDENCE_CHARS:
        evidence = evidence[:MAX_EVIDENCE_CHARS] + "…"
    digest = run.digest or ""
    return (f"Promote Model {model} to sha256:{digest[:12]}\n\n"
            f"artifact: {redact(uri)}\n"
            f"sha256:   {old} -> {digest}\n"
            f"gate:     {run.outcome} ({run.reason}"
            f"{', remembered' if run.remembered else ''})\n"
            + "".join(f"          {part}\n" for part in run.message.split("; ") if part)
            + f"revision: {run.revision}\n\nevidence: {evidence}\n\n"
            "Proposed-by: reconciler promote\n")


def promote(settings: Settings, store: ContentStore, journal: Journal, model_name: str,
            artifact: str, *, sha256: str | None = None, dry_run: bool = False,
            branch: str | None = None, retry: bool = False,
            say: Callable[[str], None] = print,
            progress: Callable[[str], None] = lambda text: None,
            fetching: Progress | None = None) -> Promotion:
    """The whole command; the result's ``exit_code`` is 0 proposed, 1 rejected,
    2 inconclusive, 3 error. Nothing is committed unless the gate passed; nothing is pushed
    on --dry-run. ``say`` hears the text a person reads, as it happens."""
    done = Promotion(model_name, redact(artifact))

    def failed(text: str) -> Promotion:
        say(f"ERROR  {text}")
        done.error, done.outcome, done.exit_code = text, "error", EXIT_ERROR
        return done

    declared = _digest(sha256)
    if redact(artifact) != artifact:
        # The URI is written into the repository: a token in its userinfo or a presigned
        # query would be committed for everyone who can read the repository to see.
        return failed(f"--artifact {redact(artifact)}: the URI carries credentials (userinfo "
                      "or a query) and would be committed to Git; promote a URI without them")
    if branch is not None and (not valid_branch(branch) or same_branch(branch, settings.branch)):
        return failed(f"--head {branch!r} is not a new branch name")
    space = workspace(settings)
    tip = space.tip()
    snapshot = space.snapshot(tip)
    desired = load_desired(snapshot, DesiredCache(cache_salt()), run_strategy_checks=False)
    model = desired.models.get(model_name)
    if model is None:
        return failed(f"no Model named {model_name!r} at {snapshot.revision}; known: "
                      f"{', '.join(sorted(desired.models)) or 'none'}")
    run = done.gate = run_gate(settings, store, journal, model.name, rev=tip,
                               artifact=artifact, sha256=declared, retry=retry,
                               progress=progress, fetching=fetching)
    label = {"passed": "PASS", "rejected": "FAIL", "inconclusive": "INCONCLUSIVE"}.get(
        run.outcome, "ERROR")
    say(f"{label}  {run.model} sha256:{run.digest or '-'} ({run.reason}"
        f"{', remembered' if run.remembered else ''})")
    for part in run.message.split("; "):
        say(f"  {part}")
    if run.outcome != "passed" or run.digest is None:
        if run.evidence:
            say("evidence: " + json.dumps(run.evidence, sort_keys=True, default=str)[
                :MAX_EVIDENCE_CHARS])
        done.exit_code = _GATE_EXITS.get(run.outcome, EXIT_ERROR)
        done.outcome = run.outcome if run.outcome in _GATE_EXITS else "error"
        done.error = None if run.outcome in _GATE_EXITS else run.message
        return done
    if run.digest == model.artifact.sha256 and artifact == model.artifact.uri:
        say(f"Model {model.name} already declares sha256:{run.digest}: nothing to propose")
        done.outcome, done.exit_code = "unchanged", EXIT_PROPOSED
        return done
    path = f"{settings.path}/{model.origin.file}" if settings.path else model.origin.file
    before = space.read(tip, path)
    if before is None:
        raise StalledError(f"{path} is not in {snapshot.revision}", reason="RevisionNotFound")
    try:
        after = set_scalars(before.decode("utf-8"), model.origin.document,
                            {("spec", "artifact", "uri"): artifact,
                             ("spec", "artifact", "sha256"): run.digest}).encode("utf-8")
    except (EditError, UnicodeDecodeError) as error:
        raise StalledError(f"{path}: cannot change Model {model.name}'s artifact in place: "
                           f"{error}", reason="EditFailed") from None
    diff = done.diff = "".join(difflib.unified_diff(
        before.decode().splitlines(keepends=True), after.decode().splitlines(keepends=True),
        f"a/{path}", f"b/{path}"))
    if dry_run:
        say(diff.rstrip("\n"))
        say("dry run: nothing committed or pushed")
        done.outcome, done.exit_code = "dry-run", EXIT_PROPOSED
        return done
    name = branch or f"{settings.proposals.branch_prefix}promote/{model.name}-{run.digest[:12]}"
    message = _message(run, model.name, model.artifact.sha256, artifact)
    commit = space.commit(tip, {path: after}, message)
    title = message.splitlines()[0]
    body = f"```diff\n{diff}```\n\n```\n{message}```\n"
    # Named before the push: an error after it (a forge that hangs) leaves both on record.
    done.branch, done.commit = name, commit
    try:
        proposed = propose(space, forge_of(settings), branch=name, base=settings.branch,
                           commit=commit, title=title, body=body, journal=journal, say=say)
    except ReconcilerError as error:
        return failed(str(error))
    done.branch, done.commit, done.reused = proposed.branch, proposed.commit, proposed.reused
    done.pull_request = proposed.pull_request
    done.outcome, done.exit_code = "proposed", EXIT_PROPOSED
    if proposed.pull_request is None:
        say(f"proposed: branch {proposed.branch}; no forge configured: open a pull request "
            f"for it into {settings.branch}")
    else:
        verb = "opened" if proposed.pull_request.created else "already open"
        say(f"proposed: pull request #{proposed.pull_request.number} {verb}: "
            f"{proposed.pull_request.url}")
    return done
