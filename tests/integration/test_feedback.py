"""Git hears about what happened: commit statuses per target and object, and proposals
that undo a rolled-back or rejected revision, against a bare repository as the remote and a
forge API on 127.0.0.1. Sinks queue and work on their own thread; what was proposed is
journaled, so a repeated event or a restart never makes a second branch or pull request."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.events import Event, EventType, Subscribers
from reconciler.feedback import CommitStatuses, RevertProposals, forge_sinks, status_context
from reconciler.forge import forge_client
from reconciler.journal import Journal
from reconciler.settings import load_settings
from tests.conftest import git
from tests.fleet import HEALTHY, Fleet, sha
from tests.integration.forge_servers import FakeForge, fake_forge


@pytest.fixture
def github() -> Iterator[FakeForge]:
    with fake_forge("github") as served:
        yield served


def event(kind: EventType, commit: str, *, target: str = "edge", object_kind: str = "Strategy",
          name: str = "app", **fields: str) -> Event:
    return Event(kind, target, f"main@sha1:{commit}", object_kind, name, **fields)  # type: ignore[arg-type]


def test_statuses_one_context_per_target_pending_then_the_outcome(
        github: FakeForge, tmp_path: Path) -> None:
    settings = load_settings(_settings_file(tmp_path, github.settings(tmp_path)), {})
    assert settings.forge is not None
    sink = CommitStatuses(forge_client(settings.forge, backoff_seconds=0.01))
    events = Subscribers()
    events.add(sink)
    commit = "a" * 40
    events.publish(event(EventType.PROGRESSING, commit, message="soaking 30m"))
    events.publish(event(EventType.PROGRESSING, commit, target="production"))
    events.publish(event(EventType.APPLIED, commit))
    events.publish(event(EventType.ROLLED_BACK, commit, target="production",
                         reason="HealthCheckFailed", message="exit 1 after 3 tries"))
    events.publish(Event(EventType.SUSPENDED, "edge", f"main@sha1:{commit}"))  # no object
    events.publish(event(EventType.APPLIED, "not-a-commit"))
    assert sink.worker.drain(30)
    assert github.contexts() == {"reconciler/edge/Strategy/app": ["pending", "success"],
                                 "reconciler/production/Strategy/app": ["pending", "failure"]}
    failure = github.statuses[-1][1]
    assert failure["description"] == "HealthCheckFailed: exit 1 after 3 tries"
    assert {sha for sha, _ in github.statuses} == {commit}
    sink.worker.close()


def test_a_hanging_forge_never_holds_up_the_publisher(github: FakeForge,
                                                      tmp_path: Path) -> None:
    settings = load_settings(_settings_file(tmp_path, github.settings(tmp_path,
                                                                      timeout="30s")), {})
    assert settings.forge is not None
    github.faults = ["hang"]
    sink = CommitStatuses(forge_client(settings.forge), size=2)
    for _ in range(5):  # one in flight (hanging), two queued, the rest dropped
        sink(event(EventType.APPLIED, "b" * 40))
    assert not github.release.is_set() and len(github.statuses) == 0, \
        "publish returned while the forge still hangs"
    github.release.set()
    assert sink.worker.drain(60)
    sink.worker.close()


class Proposing:
    """A fleet served from a bare clone, its settings with proposals on and a forge."""

    def __init__(self, tmp_path: Path, forge: FakeForge | None) -> None:
        self.fleet = Fleet(tmp_path)
        self.remote = tmp_path / "remote.git"
        self.tmp_path = tmp_path
        self.forge = forge
        self.fleet.strategy("BROKEN = True\n")
        self.bad = self.fleet.commit("a strategy that fails its health check")
        self.fleet.model(b"weights-v2")
        self.bad_model = self.fleet.commit("a model its gate rejects")
        self.fleet.write("README.md", "unrelated\n")
        self.unrelated = self.fleet.commit("an unrelated change, the tip when a pass ran")
        subprocess.run(["git", "clone", "-q", "--bare", str(self.fleet.repo), str(self.remote)],
                       check=True, capture_output=True, timeout=60)

    def sink(self, state: str = "state") -> tuple[RevertProposals, Journal]:
        text = (f"repo: {self.remote}\nstateDir: {self.tmp_path / state}\nlisten: ''\n"
                "proposals: {onRollback: true, onRejection: true, targets: [edge]}\n"
                + (self.forge.settings(self.tmp_path) if self.forge else ""))
        settings = load_settings(_settings_file(self.tmp_path, text), {})
        journal = Journal(settings.journal_path)
        sinks = forge_sinks(settings, journal)
        found = [s for s in sinks if isinstance(s, RevertProposals)]
        assert len(found) == 1
        return found[0], journal

    def branches(self) -> list[str]:
        return git(self.remote, "for-each-ref", "--format=%(refname:short)",
                   "refs/heads/").split()

    def show(self, ref: str, path: str) -> str:
        return git(self.remote, "show", f"{ref}:desired-state/{path}")


def test_a_rollback_proposes_a_revert_once_even_after_a_restart(
        github: FakeForge, tmp_path: Path) -> None:
    world = Proposing(tmp_path, github)
    sink, journal = world.sink()
    # Seen at the tip: the commit reverted is the one that changed the strategy.
    rolled_back = event(EventType.ROLLED_BACK, world.unrelated, reason="HealthCheckFailed",
                        message="exit 1")
    sink(rolled_back)
    sink(rolled_back)  # the same failure heard twice (a second target, a second pass)
    assert sink.worker.drain(60)
    branch = f"reconciler/revert/{world.bad[:12]}"
    assert branch in world.branches() and "main" in world.branches()
    assert world.show(branch, "app.py") == HEALTHY.strip(), "the bad change is undone"
    assert world.show(branch, "model.yaml") == world.show("main", "model.yaml"), \
        "only the reverted commit's change"
    assert world.show(branch, "README.md") == "unrelated"
    assert git(world.remote, "rev-parse", "main") == world.unrelated, \
        "the tracked branch is never pushed to"
    assert f"This reverts commit {world.bad}" in git(world.remote, "log", "-1", "--format=%B",
                                                     branch)
    assert [(p["head"], p["base"]) for p in github.pulls] == [(branch, "main")]
    sink.worker.close()
    journal.close()

    restarted, journal = world.sink()  # same journal: it knows the proposal was opened
    restarted(rolled_back)
    assert restarted.worker.drain(60)
    forgetful, other = world.sink("other-state")  # a lost journal: the remote branch tells
    forgetful(rolled_back)
    assert forgetful.worker.drain(60)
    assert len(github.pulls) == 1, "never a second pull request"
    for each, opened in ((restarted, journal), (forgetful, other)):
        each.worker.close()
        opened.close()


def test_a_rejected_model_proposes_its_previous_digest(github: FakeForge,
                                                       tmp_path: Path) -> None:
    world = Proposing(tmp_path, github)
    sink, journal = world.sink()
    sink(event(EventType.REJECTED, world.bad_model, object_kind="Model", name="policy",
               digest=sha(b"weights-v2"), reason="GateFailed", message="accuracy 0.5"))
    assert sink.worker.drain(60)
    branch = f"reconciler/restore/policy-{sha(b'weights-v2')[:12]}"
    restored = world.show(branch, "model.yaml")
    assert sha(b"weights-v1") in restored and sha(b"weights-v2") not in restored
    assert world.show(branch, "app.py") == world.show("main", "app.py")
    assert github.pulls[0]["title"] == "Restore Model policy's previous digest"
    sink.worker.close()
    journal.close()


def test_without_a_forge_the_branch_is_pushed_and_filters_apply(tmp_path: Path) -> None:
    world = Proposing(tmp_path, None)
    sink, journal = world.sink()
    sink(event(EventType.ROLLED_BACK, world.bad, target="production"))  # not in targets
    sink(event(EventType.STALLED, world.bad))  # not a rollback or a rejection
    sink(event(EventType.REJECTED, world.bad_model, object_kind="Model", name="policy",
               digest=sha(b"weights-v2"), reason="GateInconclusive"))  # held, not judged
    assert sink.worker.drain(30)
    assert world.branches() == ["main"]
    sink(event(EventType.ROLLED_BACK, world.bad))
    assert sink.worker.drain(60)
    assert world.branches() == ["main", f"reconciler/revert/{world.bad[:12]}"]
    sink.worker.close()
    journal.close()


def test_the_daemon_publishes_to_the_sinks_it_was_configured_with(
        github: FakeForge, tmp_path: Path) -> None:
    settings = load_settings(_settings_file(tmp_path, github.settings(tmp_path)), {})
    journal = Journal(settings.journal_path)
    sinks = forge_sinks(settings, journal)
    assert [type(s) for s in sinks] == [CommitStatuses], "statuses on, proposals off"
    assert status_context(event(EventType.APPLIED, "c" * 40)) == "reconciler/edge/Strategy/app"
    for sink in sinks:
        sink.worker.close()
    journal.close()


def _settings_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reconciler.yaml"
    if "repo:" not in text:
        text = f"stateDir: {tmp_path / 'state'}\nlisten: ''\n" + text
    path.write_text(text)
    return path


def test_a_proposal_queued_when_the_daemon_died_is_made_on_the_next_start(
        github: FakeForge, tmp_path: Path) -> None:
    world = Proposing(tmp_path, github)
    dying, journal = world.sink()
    dying.worker.close()  # as if killed: the queue is never emptied
    dying(event(EventType.ROLLED_BACK, world.bad, reason="HealthCheckFailed"))
    assert github.pulls == [] and world.branches() == ["main"]
    journal.close()
    started, journal = world.sink()  # forge_sinks resumes what the journal says is queued
    assert started.worker.drain(60)
    assert world.branches() == ["main", f"reconciler/revert/{world.bad[:12]}"]
    assert len(github.pulls) == 1
    assert started.resume() == 0, "handled: not queued again on the next start"
    started.worker.close()
    journal.close()


def test_a_secret_in_the_failure_message_reaches_neither_git_nor_the_journal(
        tmp_path: Path) -> None:
    """A failure's message can quote a URL with its credentials (a health check's): the
    revert's commit message (in Git for everyone who reads it) and the journal get it
    scrubbed, as a commit status's description does."""
    world = Proposing(tmp_path, None)
    sink, journal = world.sink()
    sink(event(EventType.ROLLED_BACK, world.bad, reason="HealthCheckFailed",
               message="GET https://probe:s3cr3t-pw@health.example/ready answered 500"))
    assert sink.worker.drain(60)
    message = git(world.remote, "log", "-1", "--format=%B", f"reconciler/revert/{world.bad[:12]}")
    assert "health.example/ready answered 500" in message and "s3cr3t-pw" not in message
    assert all("s3cr3t-pw" not in str(entry.detail) for entry in journal.events(limit=100))
    sink.worker.close()
    journal.close()


def test_statuses_queued_when_the_daemon_stops_are_still_posted(
        github: FakeForge, tmp_path: Path) -> None:
    """A SIGTERM right after a change turned healthy: its success must reach the forge, or
    the revision says pending for good (no later pass posts it again)."""
    settings = load_settings(_settings_file(tmp_path, github.settings(tmp_path)), {})
    assert settings.forge is not None
    sink = CommitStatuses(forge_client(settings.forge, backoff_seconds=0.01))
    for target in ("edge", "staging", "production"):
        sink(event(EventType.PROGRESSING, "d" * 40, target=target))
        sink(event(EventType.APPLIED, "d" * 40, target=target))
    sink.worker.close()  # what the daemon does on its way out
    assert {context: states[-1] for context, states in github.contexts().items()} == {
        f"reconciler/{target}/Strategy/app": "success"
        for target in ("edge", "staging", "production")}
