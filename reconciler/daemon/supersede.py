"""A newer revision supersedes the check of an older one (Flagger #30, Argo CD #11494).

The daemon runs one pass at a time; a soak, a rollout wait, an analysis or a gauntlet can
take an hour. When a trigger arrives during an action (a ref change of a local repository,
a webhook, the poll interval of a remote), this thread looks at the branch's tip as the
pass would accept it (``GitSource.peek``: descends, signed; never accepted here), loads
its desired state (documents are cached by blob id; an invalid revision supersedes
nothing) and, when the object under way now wants other content on that target, or is no
longer sent there, fires the action's interrupt. The executor then leaves the superseded
content as it is (no rollback, no failure mark, no gate verdict remembered) and the pass
is planned again at once from the new revision.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from reconciler.app import desired_cache, git_source
from reconciler.desired.documents import Desired
from reconciler.desired.loader import load_desired
from reconciler.diagnostics import InvalidInput
from reconciler.errors import classify
from reconciler.execute.interrupts import Cause, Running
from reconciler.settings import Settings
from reconciler.source.git import GitSource
from reconciler.source.location import is_local_path

log = logging.getLogger(__name__)
# Fires the running action's interrupt if ``running`` is still the one under way.
Fire = Callable[[Running, Cause, str], bool]


def wanted(desired: Desired, running: Running) -> str | None:
    """The digest the revision wants for the running object on its target; None when the
    object is no longer sent there."""
    if running.kind == "Model":
        model = desired.models.get(running.name)
        return model.artifact.sha256 if model and running.target in model.targets else None
    objects = desired.strategies if running.kind == "Strategy" else desired.configs
    obj = objects.get(running.name)
    if obj is None or running.target not in obj.targets:
        return None
    return desired.content_digests.get((obj.kind, obj.name))


class SupersedeWatch:
    def __init__(self, settings: Callable[[], Settings],
                 running: Callable[[], Running | None], fire: Fire,
                 stop: threading.Event) -> None:
        self._settings = settings
        self._running = running
        self._fire = fire
        self._stop = stop
        self._poked = threading.Event()
        self._source: tuple[Settings, GitSource] | None = None
        self._thread = threading.Thread(target=self._run, name="supersede", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """A trigger: a new commit may be there."""
        self._poked.set()

    def _poll_seconds(self, settings: Settings) -> float | None:
        """A remote is looked at every poll interval while an action is under way."""
        remote = settings.repo is not None and not is_local_path(settings.repo)
        return settings.interval_seconds if remote else None

    def _run(self) -> None:
        while not self._stop.is_set():
            settings = self._settings()
            poll = self._poll_seconds(settings)
            poked = self._poked.wait(poll or 5.0)  # 5 s: a look at the stop event
            self._poked.clear()
            running = self._running()
            if self._stop.is_set():
                return
            if running is None or not (poked or poll):
                continue
            try:
                self.look(settings, running)
            except Exception as error:  # a fault here never ends the check under way
                outcome = classify(error)
                log.warning(f"supersede: cannot look at the branch's tip ({outcome.reason}: "
                            f"{outcome.message}); the check under way goes on")

    def look(self, settings: Settings, running: Running) -> bool:
        """Fire ``running``'s interrupt if the branch's tip wants other content for it."""
        if settings.repo is None:
            return False
        if self._source is None or self._source[0] is not settings:  # SIGHUP: new settings
            self._source = (settings, git_source(settings))
        snapshot = self._source[1].peek().snapshot
        if snapshot.revision == running.revision:
            return False
        cache = desired_cache(settings)  # read, never saved: the pass owns the file
        try:
            desired = load_desired(snapshot, cache)
        except InvalidInput as error:
            first = error.diagnostics[0].format() if error.diagnostics else ""
            log.warning(f"supersede: {snapshot.revision} is invalid ({first}); the check of "
                        f"{running.kind}/{running.name} on {running.target} goes on")
            return False
        want = wanted(desired, running)
        if want == running.desired:
            return False
        commit = snapshot.revision.split(":")[-1][:12]
        what = (f"now sha256:{want[:12]}" if want is not None
                else f"no longer sent to {running.target}")
        why = (f"superseded by commit {commit}: {running.kind}/{running.name} is {what}; its "
               f"check of sha256:{running.desired[:12]} was ended")
        return self._fire(running, Cause.SUPERSEDED, why)
