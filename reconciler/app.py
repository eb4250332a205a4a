"""Wiring: settings -> source -> desired -> observed -> plan. The CLI and the daemon share it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.desired.cache import DesiredCache
from reconciler.desired.documents import Desired
from reconciler.desired.loader import cache_salt, load_desired
from reconciler.errors import StalledError
from reconciler.fleet.digests import DigestCache
from reconciler.fleet.local import LocalFleet, ObservedTarget
from reconciler.plan.planner import History, Plan, observation_request, plan
from reconciler.settings import Settings
from reconciler.source.git import GitSource


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


def observe(desired: Desired, fleet: LocalFleet) -> dict[str, ObservedTarget]:
    observed = {}
    for target in desired.targets.values():
        if target.is_local:
            files, pointers = observation_request(desired, target)
            observed[target.name] = fleet.observe(target, files, pointers)
        else:
            observed[target.name] = ObservedTarget(
                target.name, f"kubernetes {target.kube_context or '(current context)'}/"
                f"{target.kube_namespace}", {}, {},
                error="Kubernetes targets are not supported by this version yet")
    return observed


@dataclass(frozen=True)
class PlannedPass:
    """A plan with what it was made from: what ``plan`` prints and ``apply`` executes."""

    plan: Plan
    desired: Desired
    observed: Mapping[str, ObservedTarget]
    fleet: LocalFleet


def plan_pass(settings: Settings, now: float, history: History | None = None,
              cache: DesiredCache | None = None) -> PlannedPass:
    """Fetch, load, observe and plan. Raises InvalidInput or a ReconcilerError.
    A long-lived caller (the daemon) passes its ``cache`` so it is not read every pass."""
    accepted = git_source(settings).fetch()
    cache = cache or desired_cache(settings)
    try:
        desired = load_desired(accepted.snapshot, cache)
    finally:
        cache.save()
    fleet = local_fleet(settings)
    observed = observe(desired, fleet)
    fleet.save_digests()
    return PlannedPass(plan(desired, observed, history or History(), now), desired, observed,
                       fleet)
