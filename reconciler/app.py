"""The composition root: settings become the parts a pass is made of, wired once.

Only here is an adapter chosen by the kind of a target (:data:`FLEET_TYPES`, keyed by
``Target.type``); everything else speaks to the ``Fleet`` and ``Place`` protocols. A new
kind of target is a new package plus one entry in that table. The daemon keeps one
:class:`Wiring` for its life (caches and cluster connections are reused); each command
makes its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.desired import strategy_check
from reconciler.desired.cache import DesiredCache
from reconciler.desired.documents import Desired, Target
from reconciler.desired.loader import cache_salt
from reconciler.digests import DigestCache
from reconciler.errors import StalledError
from reconciler.gauntlet.runner import JobLauncher
from reconciler.local.fleet import LocalFleet
from reconciler.places import Fleet
from reconciler.sandbox import runner as sandbox
from reconciler.settings import Settings
from reconciler.source.git import GitSource
from reconciler.store import Store

if TYPE_CHECKING:  # the kubernetes client costs 0.25 s to import: only when a target needs it
    from reconciler.kube.api import Clusters


def git_source(settings: Settings) -> GitSource:
    if settings.repo is None:
        raise StalledError("no repository configured: set 'repo' in reconciler.yaml or pass "
                           "--repo", reason="NoRepository")
    return GitSource(settings.repo, settings.branch, settings.path, settings.mirror_dir,
                     allow_history_rewrite=settings.allow_history_rewrite,
                     signature_policy=settings.signature,
                     credentials=settings.credentials)


def confine_state_dir(settings: Settings) -> None:
    """The fleet's users may follow a pointer into the store and read what it names;
    nothing else of the state dir is theirs: the dir and the store can be crossed, not
    listed, and the journal, mirror and caches are the daemon's alone. Called by the
    commands that act (``run``, ``apply``), which own the state dir."""
    for folder, mode in ((settings.state_dir, 0o711), (settings.store_dir, 0o711),
                         (settings.store_dir / "sha256", 0o711),
                         (settings.mirror_dir, 0o700), (settings.cache_dir, 0o700)):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, mode)
    for journal in settings.state_dir.glob(f"{settings.journal_path.name}*"):
        os.chmod(journal, 0o600)


def desired_cache(settings: Settings) -> DesiredCache:
    salt = cache_salt()
    return DesiredCache(salt, settings.cache_dir / f"desired-{salt}.json")


class Connections:
    """The cluster clients for these settings: made on first use (the client import costs
    0.25 s, which a local-only fleet never pays), then kept so connections are pooled."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clusters: Clusters | None = None

    def __call__(self) -> Clusters:
        if self._clusters is None:
            from reconciler.kube.api import Clusters
            self._clusters = Clusters(self._settings.kube)
        return self._clusters


def gauntlet_jobs(settings: Settings, connections: Connections,
                  stop: threading.Event) -> JobLauncher | None:
    """Where gauntlets with ``runIn: job`` run, when the settings say."""
    if settings.gauntlet_job is None:
        return None
    from reconciler.kube.jobs import GauntletJobs
    return GauntletJobs(connections(), settings.gauntlet_job, stop)


def configure_sandbox(settings: Settings, connections: Connections | None = None,
                      stop: threading.Event | None = None) -> None:
    """Where repository code runs, process-wide, from ``sandbox:``. In mode ``job`` strategy
    checks go to cluster Jobs (kube.codejobs, through the coderun protocol: the desired
    layer never sees the cluster client); ``stop`` deletes a running one."""
    sandbox.configure(settings.sandbox)
    if settings.sandbox != "job" or settings.sandbox_job is None:
        strategy_check.use_jobs(None)
        return
    from reconciler.kube.codejobs import CodeJobs
    strategy_check.use_jobs(CodeJobs((connections or Connections(settings))(),
                                     settings.sandbox_job, stop or threading.Event()))


def _local(wiring: Wiring) -> Fleet:
    return LocalFleet(wiring.settings.fleet_root, wiring.store, wiring.digests,
                      wiring.settings.allowed_roots, run_as=wiring.settings.run_as,
                      log_roots=wiring.settings.analysis.log_roots)


def _kubernetes(wiring: Wiring) -> Fleet:
    from reconciler.kube.fleet import KubernetesFleet  # only with a Kubernetes target
    return KubernetesFleet(wiring.connections(), wiring.store)


FLEET_TYPES: dict[str, Callable[[Wiring], Fleet]] = {"local": _local, "kubernetes": _kubernetes}
# Target types whose live state the daemon watches for someone else's edits (kube/watch.py).
WATCHED_TYPES = frozenset({"kubernetes"})


def watched(targets: tuple[Target, ...]) -> tuple[Target, ...]:
    return tuple(target for target in targets if target.type in WATCHED_TYPES)


class Wiring:
    """Settings, and what is built from them for passes: the source, the desired-state
    cache, the digest cache, the store, cluster connections and one fleet per target type.
    ``loaded``: the last desired state and the folder tree it came from, so a pass over an
    unchanged folder builds nothing again."""

    def __init__(self, settings: Settings, *, connections: Connections | None = None) -> None:
        self.settings = settings
        self.source = git_source(settings) if settings.repo is not None else None
        self.loaded: tuple[str, Desired] | None = None
        self.connections = connections or Connections(settings)
        self.desired_cache = desired_cache(settings)
        self.digests = DigestCache(settings.cache_dir / "fleet-digests.json")
        self.store = Store(settings.store_dir, self.digests)
        self._fleets: dict[str, Fleet] = {}

    def reload(self, settings: Settings) -> None:
        """New settings (SIGHUP): the repository, branch or folder may have changed."""
        self.settings = settings
        self.source = git_source(settings) if settings.repo is not None else None
        self.loaded = None

    def fleet(self, target: Target) -> Fleet:
        if target.type not in self._fleets:
            self._fleets[target.type] = FLEET_TYPES[target.type](self)
        return self._fleets[target.type]

    def finish_observing(self) -> None:
        for fleet in self._fleets.values():
            fleet.finish_observing()
        self.digests.save()
