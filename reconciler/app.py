"""Wiring: settings -> source -> desired -> observed -> plan. The CLI and the daemon share it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.desired import strategy_check
from reconciler.desired.cache import DesiredCache
from reconciler.desired.documents import Desired
from reconciler.desired.loader import cache_salt, load_desired
from reconciler.errors import StalledError
from reconciler.fleet.digests import DigestCache
from reconciler.fleet.local import LocalFleet, ObservedTarget
from reconciler.gauntlet.runner import JobLauncher
from reconciler.plan.planner import History, Plan, observation_request, plan
from reconciler.runtime.leadership import Leadership
from reconciler.sandbox import runner as sandbox
from reconciler.settings import Settings
from reconciler.source.git import GitSource

if TYPE_CHECKING:  # the kubernetes client costs 0.25 s to import: only when a target needs it
    from reconciler.kube.api import Clusters
    from reconciler.kube.fleet import KubernetesFleet


def git_source(settings: Settings) -> GitSource:
    if settings.repo is None:
        raise StalledError("no repository configured: set 'repo' in reconciler.yaml or pass "
                           "--repo", reason="NoRepository")
    return GitSource(settings.repo, settings.branch, settings.path, settings.mirror_dir,
                     allow_history_rewrite=settings.allow_history_rewrite,
                     signature_policy=settings.signature)


def desired_cache(settings: Settings) -> DesiredCache:
    salt = cache_salt()
    return DesiredCache(salt, settings.cache_dir / f"desired-{salt}.json")


def local_fleet(settings: Settings) -> LocalFleet:
    return LocalFleet(settings.fleet_root, settings.store_dir,
                      DigestCache(settings.cache_dir / "fleet-digests.json"))


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


def leadership(settings: Settings, connections: Connections, stop: threading.Event, *,
               on_gained: Callable[[], None],
               on_lost: Callable[[str], None]) -> Leadership | None:
    """The Lease of ``leaderElection``, held in the background; None without one."""
    election = settings.leader_election
    if election is None:
        return None
    from reconciler.kube.lease import LeaseElector
    return Leadership(LeaseElector(connections().get(election.context), election),
                      election.lease_seconds, stop, on_gained=on_gained, on_lost=on_lost)


def observe(desired: Desired, fleet: LocalFleet,
            kube: KubernetesFleet | None) -> dict[str, ObservedTarget]:
    observed = {}
    for target in desired.targets.values():
        files, pointers = observation_request(desired, target)
        if target.is_local:
            observed[target.name] = fleet.observe(target, files, pointers)
        else:
            assert kube is not None
            observed[target.name] = kube.observe(target, files, pointers)
    return observed


@dataclass(frozen=True)
class PlannedPass:
    """A plan with what it was made from: what ``plan`` prints and ``apply`` executes."""

    plan: Plan
    desired: Desired
    observed: Mapping[str, ObservedTarget]
    fleet: LocalFleet
    kube: KubernetesFleet | None  # None when no target is on Kubernetes


def plan_pass(settings: Settings, now: float, history: History | None = None,
              cache: DesiredCache | None = None,
              connections: Connections | None = None,
              stop: threading.Event | None = None) -> PlannedPass:
    """Fetch, load, observe and plan. Raises InvalidInput or a ReconcilerError.
    A long-lived caller (the daemon) passes its ``cache`` so it is not read every pass,
    its cluster ``connections`` so they are reused, and its ``stop`` so that a strategy
    check running as a Job is deleted when it stops."""
    connections = connections or Connections(settings)
    configure_sandbox(settings, connections, stop)
    accepted = git_source(settings).fetch()
    cache = cache or desired_cache(settings)
    try:
        desired = load_desired(accepted.snapshot, cache)
    finally:
        cache.save()
    fleet = local_fleet(settings)
    kube = None
    if any(not target.is_local for target in desired.targets.values()):
        from reconciler.kube.fleet import KubernetesFleet
        kube = KubernetesFleet(connections())
    observed = observe(desired, fleet, kube)
    fleet.save_digests()
    return PlannedPass(plan(desired, observed, history or History(), now), desired, observed,
                       fleet, kube)
