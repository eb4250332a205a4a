"""Git hears what happened to its revisions: a commit status per target and object on the
revision, and, on a rejection or an automatic rollback, a proposal that undoes it (a revert
commit, or a Model's previous digest) on a new branch with a pull request.

Both are event sinks (:mod:`reconciler.events`). A sink only queues (a bounded queue; when
it is full the event is dropped and logged): the Git and HTTP work happens on the sink's own
thread, never inside a pass. The daemon never pushes to the tracked branch; what it proposed
is journaled, so a retry or a restart never opens a second branch or pull request.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import replace

from reconciler.desired.cache import DesiredCache
from reconciler.desired.documents import Config, Strategy
from reconciler.desired.edit import EditError, set_scalars
from reconciler.desired.loader import cache_salt, load_desired
from reconciler.desired.yamlload import YamlError, load_documents
from reconciler.diagnostics import InvalidInput
from reconciler.errors import ReconcilerError, TransientError
from reconciler.events import Event, EventType
from reconciler.forge import Forge, StatusState
from reconciler.journal import Journal
from reconciler.promote import forge_of, propose, workspace
from reconciler.redaction import redact_text
from reconciler.settings import Settings
from reconciler.source.proposals import Workspace
from reconciler.vocabulary import JournalAction, Phase, Reason

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
STATUS_GRACE_SECONDS = 5.0  # a stopping daemon's wait for queued statuses to be posted
HISTORY_DEPTH = 200  # first-parent commits searched for a Model's previous digest
PROPOSAL_ATTEMPTS = 3
PROPOSAL_RETRY_SECONDS = 30.0
_COMMIT = re.compile(r"@sha1:([0-9a-f]{40})$")
_QUEUED = "queuedAs"  # in a queued event's values: its journal entry

# What each event says on the revision; events absent here leave the status as it is.
STATES: dict[EventType, StatusState] = {
    EventType.PROGRESSING: "pending", EventType.APPLIED: "success",
    EventType.PROMOTED: "success", EventType.ROLLED_BACK: "failure",
    EventType.REJECTED: "failure", EventType.STALLED: "failure",
    EventType.SUPERSEDED: "canceled"}


def commit_of(revision: str | None) -> str | None:
    """The commit id of a revision (``branch@sha1:<hex>``)."""
    found = _COMMIT.search(revision or "")
    return found.group(1) if found else None


def status_context(event: Event) -> str:
    """One context per target and object (its gate included): targets, clusters and objects
    never overwrite each other's status."""
    return f"reconciler/{event.target}/{event.kind}/{event.name}"


def _log(text: str) -> None:
    """At warning: each line is something a person may want to act on (a dropped event,
    a failed status, a proposal to review)."""
    log.warning(redact_text(text))


class _Worker:
    """A bounded queue and the thread that empties it; ``handle`` errors are logged."""

    def __init__(self, name: str, handle: Callable[[Event], None], size: int, *,
                 grace_seconds: float = 0.0) -> None:
        self._name = name
        self._handle = handle
        self._grace = grace_seconds  # on close, to finish what is queued
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=size)
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            _log(f"{self._name}: queue full, dropped {event.type} {event.subject}")

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(event)
            except Exception as error:  # a forge's fault never reaches the daemon
                _log(f"{self._name}: {event.type} {event.subject}: {error}")
            finally:
                self._queue.task_done()

    def drain(self, timeout: float) -> bool:
        """Wait until every queued event is handled (tests, shutdown); False on timeout."""
        done = threading.Event()

        def join() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=join, daemon=True).start()
        return done.wait(timeout)

    def close(self) -> None:
        if self._grace and not self.drain(self._grace):
            _log(f"{self._name}: stopped with {self._queue.qsize()} not yet handled")
        self.stop.set()
        self._thread.join(timeout=5)


class CommitStatuses:
    """A sink that posts one commit status per (revision, target, object)."""

    def __init__(self, forge: Forge, *, size: int = QUEUE_SIZE) -> None:
        self._forge = forge
        # Unlike a revert proposal (journaled, resumed), a status still queued at a stop is
        # lost: no later pass posts it again, and the revision would say pending for good.
        self.worker = _Worker("commit statuses", self._post, size,
                              grace_seconds=STATUS_GRACE_SECONDS)

    def __call__(self, event: Event) -> None:
        if event.type in STATES and event.kind and commit_of(event.revision):
            self.worker.put(event)

    def _post(self, event: Event) -> None:
        sha = commit_of(event.revision)
        assert sha is not None
        state = STATES[event.type]
        if state == "pending":
            description = event.message or "in place; soaking and being analysed"
        elif state == "success":
            description = event.message or "healthy and converged"
        elif state == "canceled":
            description = "superseded by a newer revision before its checks ended"
        else:
            description = f"{event.reason or event.type}: {event.message}"
        self._forge.set_status(sha, state, status_context(event), redact_text(description))


class RevertProposals:
    """A sink that proposes to undo a rejected or rolled-back revision in Git."""

    def __init__(self, settings: Settings, journal: Journal, forge: Forge | None, *,
                 size: int = QUEUE_SIZE, retry_seconds: float = PROPOSAL_RETRY_SECONDS) -> None:
        self._settings = settings
        self._journal = journal
        self._forge = forge
        self._retry_seconds = retry_seconds
        self.worker = _Worker("revert proposals", self._propose_with_retries, size)

    def __call__(self, event: Event) -> None:
        wanted = self._settings.proposals
        if not ((event.type is EventType.ROLLED_BACK and wanted.on_rollback)
                or (event.type is EventType.REJECTED and wanted.on_rejection)):
            return
        if event.reason == Reason.GATE_INCONCLUSIVE:
            return  # held, not judged: whether to undo it is a person's call
        if event.kind and wanted.wants(event.target) and commit_of(event.revision):
            # Journaled before it is queued: a kill -9 with it in the queue loses nothing,
            # the next start queues it again (resume). Its message goes into Git (the
            # commit message, the pull request): a URL in it loses its credentials here.
            event = replace(event, message=redact_text(event.message))
            queued = self._journal.record(
                JournalAction.PROPOSE, Phase.INFO, revision=event.revision,
                key=(event.target, event.kind, event.name),
                detail={"step": "queued", "event": str(event.type), "digest": event.digest,
                        "reason": event.reason, "message": event.message[:500]})
            self.worker.put(replace(event, values={_QUEUED: queued}))

    def resume(self) -> int:
        """Queue again what an earlier run queued and never finished; returns how many."""
        entries = self._journal.events(action=JournalAction.PROPOSE, limit=1000)
        finished = {entry.detail.get("queued") for entry in entries
                    if entry.detail.get("step") == "handled"}
        pending = [entry for entry in entries
                   if entry.detail.get("step") == "queued" and entry.id not in finished]
        for entry in pending:
            self.worker.put(Event(EventType(entry.detail["event"]), entry.target or "",
                                  entry.revision, entry.kind or "", entry.name or "",
                                  entry.detail.get("digest"), entry.detail.get("reason"),
                                  entry.detail.get("message") or "", {_QUEUED: entry.id}))
        return len(pending)

    def _handled(self, event: Event, outcome: str) -> None:
        if _QUEUED in event.values:
            self._journal.record(JournalAction.PROPOSE, Phase.INFO,
                                 detail={"step": "handled", "queued": event.values[_QUEUED],
                                         "outcome": outcome})

    def branch_of(self, event: Event, culprit: str) -> str:
        prefix = self._settings.proposals.branch_prefix
        if event.kind == "Model":
            return f"{prefix}restore/{event.name}-{(event.digest or culprit)[:12]}"
        return f"{prefix}revert/{culprit[:12]}"

    def _culprit(self, space: Workspace, revision: str, event: Event) -> str:
        """The commit to revert: the newest one at or before ``revision`` that changed the
        object's files (its document, its source or schema), not merely the branch's tip
        when the failure was seen (a later unrelated commit would be reverted for nothing)."""
        folder = self._settings.path
        try:
            desired = load_desired(space.snapshot(revision), DesiredCache(cache_salt()),
                                   run_strategy_checks=False)
        except (ReconcilerError, InvalidInput):
            return revision
        found: Strategy | Config | None = (desired.strategies.get(event.name)
                                            if event.kind == "Strategy"
                                            else desired.configs.get(event.name))
        if found is None:
            return revision
        files = {found.origin.file, found.source if isinstance(found, Strategy)
                 else found.schema}
        paths = {f"{folder}/{name}" if folder else name for name in files if name}
        for commit in space.first_parents(revision, HISTORY_DEPTH):
            if space.touches(commit, paths):
                return commit
        return revision

    def _proposed(self, branch: str) -> bool:
        """Done before (this run or an earlier one): the journal says it was opened (or, with
        no forge, pushed)."""
        done_step = "opened" if self._forge is not None else "pushed"
        return any(entry.detail.get("branch") == branch and entry.detail.get("step") == done_step
                   for entry in self._journal.events(action=JournalAction.PROPOSE, limit=1000))

    def _propose_with_retries(self, event: Event) -> None:
        delay = self._retry_seconds
        for attempt in range(PROPOSAL_ATTEMPTS):
            try:
                self._handled(event, self._propose(event))
                return
            except TransientError as error:
                if attempt + 1 == PROPOSAL_ATTEMPTS:
                    raise
                _log(f"revert proposals: {event.subject}: {error}; retrying in {delay:.0f}s")
                if self.worker.stop.wait(delay):
                    return
                delay *= 2

    def _propose(self, event: Event) -> str:
        """What became of it: proposed, already proposed, or nothing to propose."""
        revision = commit_of(event.revision)
        assert revision is not None
        space = workspace(self._settings)
        tip = space.tip()
        bad = revision if event.kind == "Model" else self._culprit(space, revision, event)
        branch = self.branch_of(event, bad)
        if self._proposed(branch):
            return "already proposed"
        why = f"{event.type} on {event.target}: {event.reason or ''} {event.message}".strip()
        if event.kind == "Model":
            commit = self._restore_model(space, tip, event, why)
        else:
            short = space.message(bad).splitlines()[0] if space.message(bad) else bad[:12]
            commit = space.revert(bad, tip, f'Revert "{short}"\n\nThis reverts commit {bad}.\n\n'
                                  f"{event.subject}: {why}\n\n"
                                  "Proposed-by: reconciler (it never pushes to the tracked "
                                  "branch)\n")
        if commit is None:
            _log(f"revert proposals: nothing to propose for {event.subject} at {bad[:12]}: "
                 f"{self._settings.branch} no longer asks for it, or the revert does not "
                 "apply cleanly")
            return "nothing to propose"
        title = (f"Restore Model {event.name}'s previous digest" if event.kind == "Model"
                 else f"Revert {bad[:12]}: {event.subject} was {event.type}")
        proposed = propose(space, self._forge, branch=branch, base=self._settings.branch,
                           commit=commit, title=title,
                           body=f"{why}\n\nThe reconciler proposes this because "
                           f"{event.subject} was {event.type} at {event.revision}.\n",
                           journal=self._journal, say=_log)
        if proposed.pull_request is not None:
            _log(f"revert proposals: {event.subject}: {proposed.pull_request.url}")
        return f"proposed on {branch}"

    def _restore_model(self, space: Workspace, tip: str, event: Event,
                       why: str) -> str | None:
        """A commit setting the Model back to the newest digest before the bad one that its
        branch's history declares; None when the tip no longer declares the bad one."""
        folder = self._settings.path
        snapshot = space.snapshot(tip)
        path, current = None, None
        for entry in snapshot.entries().values():
            if entry.kind == "file" and entry.path.endswith((".yaml", ".yml")):
                found = _model_in(snapshot.read(entry), event.name)
                if found is not None:
                    path = f"{folder}/{entry.path}" if folder else entry.path
                    current = found
                    break
        if path is None or current is None or current[1]["sha256"] != event.digest:
            return None
        for older in space.first_parents(tip, HISTORY_DEPTH)[1:]:
            data = space.read(older, path)
            previous = None if data is None else _model_in(data, event.name)
            if previous is not None and previous[1].get("sha256") not in (None, event.digest):
                break
        else:
            return None
        before = space.read(tip, path)
        assert before is not None
        try:
            after = set_scalars(before.decode("utf-8"), current[0],
                                {("spec", "artifact", "uri"): str(previous[1]["uri"]),
                                 ("spec", "artifact", "sha256"): str(previous[1]["sha256"])})
        except (EditError, UnicodeDecodeError) as error:
            raise ReconcilerError(f"{path}: cannot restore Model {event.name}: {error}") \
                from None
        return space.commit(tip, {path: after.encode("utf-8")},
                            f"Restore Model {event.name} to sha256:{previous[1]['sha256'][:12]}"
                            f"\n\nsha256:   {event.digest} -> {previous[1]['sha256']}\n"
                            f"artifact: {previous[1]['uri']}\n\n{event.subject}: {why}\n\n"
                            "Proposed-by: reconciler (it never pushes to the tracked "
                            "branch)\n")


def _model_in(data: bytes, name: str) -> tuple[int, dict[str, str]] | None:
    """(document index, its artifact) of the Model ``name`` in a YAML file, else None."""
    try:
        documents = load_documents(data)
    except YamlError:
        return None
    for document in documents:
        content = document.data
        if isinstance(content, dict) and content.get("kind") == "Model" \
                and (content.get("metadata") or {}).get("name") == name:
            artifact = (content.get("spec") or {}).get("artifact")
            if isinstance(artifact, dict) and "sha256" in artifact and "uri" in artifact:
                return document.index, artifact
    return None


def forge_sinks(settings: Settings, journal: Journal) -> list[CommitStatuses | RevertProposals]:
    """The sinks the settings ask for (none without a forge or proposals)."""
    forge = forge_of(settings)
    sinks: list[CommitStatuses | RevertProposals] = []
    if forge is not None and settings.forge is not None and settings.forge.statuses:
        sinks.append(CommitStatuses(forge))
    if settings.proposals.on_rollback or settings.proposals.on_rejection:
        proposals = RevertProposals(settings, journal, forge)
        proposals.resume()
        sinks.append(proposals)
    return sinks
