"""What a pull request asks of the fleet without touching it: a model's gate run on any
revision without flipping anything (:func:`run_gate`), and the plan of any revision against
the live fleet (:func:`plan_revision`, ``POST /plan``).

On the fleet host ``reconciler gauntlet MODEL --rev REV`` runs it; a CI without the
fleet's credentials asks the running daemon over its authenticated HTTP API (``POST
/gate``, signed like the webhook), which runs this same function. Either way the PR's
code (its gauntlet spec, game module, metrics command) runs only in the sandbox, and only
reconciler's own code records the verdict, from the sandbox's validated report — under a
key that covers every input, so a PR can make its own check pass but never main's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from reconciler.app import Connections, Wiring, gauntlet_jobs, git_source
from reconciler.artifacts.fetch import FetchLimits, fetch
from reconciler.desired.cache import DesiredCache
from reconciler.desired.documents import Desired, Gauntlet
from reconciler.desired.loader import cache_salt, load_desired
from reconciler.diagnostics import InvalidInput
from reconciler.digests import Progress, VerificationFailed
from reconciler.errors import ReconcilerError
from reconciler.gauntlet.budgets import gate_costs
from reconciler.gauntlet.runner import GateOutcome, GauntletRunner
from reconciler.journal import Journal
from reconciler.local.roots import check_roots
from reconciler.passes import PlannedPass
from reconciler.places import ContentStore
from reconciler.plan.observed import ObservedFile, ObservedPointer, ObservedTarget
from reconciler.plan.planner import History, observation_request, plan
from reconciler.redaction import redact
from reconciler.settings import Settings


@dataclass(frozen=True)
class GateRun:
    """What a gate run came to: ``outcome`` as ``Verdict.outcome`` says, or ``error``
    when it could not run at all (an unknown model, an artifact that did not verify)."""

    model: str
    revision: str | None
    digest: str | None
    outcome: GateOutcome
    reason: str
    message: str
    remembered: bool = False
    evidence: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "revision": self.revision, "sha256": self.digest,
                "outcome": self.outcome, "reason": self.reason, "message": self.message,
                "remembered": self.remembered, "evidence": self.evidence or {}}


def run_gate(settings: Settings, store: ContentStore, journal: Journal, model_name: str, *,
             rev: str | None = None, artifact: str | None = None,
             sha256: str | None = None, retry: bool = False,
             stop: threading.Event | None = None,
             progress: Callable[[str], None] = lambda text: None,
             fetching: Progress | None = None, playing: Progress | None = None) -> GateRun:
    """Run ``model_name``'s gate as declared at ``rev`` (default the branch) on its
    declared artifact, or on ``artifact`` (its verdict remembered under its own digest;
    verified against ``sha256`` when given, else hashed as it lands in the store).
    ``playing`` hears (games played, the most the gate may play) as a match goes."""
    source = git_source(settings)
    snapshot = source.snapshot_at(rev or settings.branch)
    desired = load_desired(snapshot, DesiredCache(cache_salt()), run_strategy_checks=False)
    if rev is not None and rev != settings.branch:
        # The GPU budget is the fleet's, as its branch declares it: a pull request that
        # drops or raises its Budget does not get to spend the daemon's day.
        branch = load_desired(source.snapshot_at(settings.branch), DesiredCache(cache_salt()),
                              run_strategy_checks=False)
        desired = replace(desired, budgets=branch.budgets)
    model = desired.models.get(model_name)
    if model is None:
        return GateRun(model_name, snapshot.revision, None, "error", "UnknownModel",
                       f"no Model named {model_name!r} at {snapshot.revision}; known: "
                       f"{', '.join(sorted(desired.models)) or 'none'}")
    if model.gauntlet is None:
        return GateRun(model.name, snapshot.revision, model.artifact.sha256, "passed",
                       "NoGauntlet", f"Model {model.name} declares no gauntlet: nothing to run")
    uri = artifact or model.artifact.uri
    try:
        path = fetch(uri, sha256 if artifact else model.artifact.sha256, model.artifact.format,
                     store, desired.read_file, progress=fetching, stop=stop,
                     limits=FetchLimits.of(settings.artifacts, model.artifact.max_bytes))
    except (VerificationFailed, ReconcilerError) as error:
        return GateRun(model.name, snapshot.revision, None, "error", "ArtifactNotVerified",
                       f"artifact {redact(uri)} was not verified: {error}")
    digest = path.name
    if retry:
        journal.forget_gates(model.name, digest)
    verdict = GauntletRunner(journal, store, progress=progress,
                             games=_game_counter(desired.gauntlets.get(model.gauntlet), playing),
                             jobs=gauntlet_jobs(settings, Connections(settings),
                                                stop or threading.Event()),
                             stop=stop).evaluate(model, desired, digest, path,
                                                 candidate_uri=uri)
    return GateRun(model.name, snapshot.revision, digest, verdict.outcome, verdict.reason,
                   verdict.message, verdict.remembered, verdict.evidence)


def _game_counter(gauntlet: Gauntlet | None, playing: Progress | None
                  ) -> Callable[[str, int], None]:
    """The runner's per-opponent game counts as one (played, at most) progress: the SPRT
    usually decides well before its budget, so the total is a ceiling."""
    ceiling = sum(int(str(cost["maxGames"])) for cost in gate_costs(gauntlet)) \
        if gauntlet is not None else 0
    played = 0

    def count(opponent: str, new: int) -> None:
        nonlocal played
        played += new
        if playing is not None:
            playing(played, max(ceiling, played))

    return count


def plan_revision(wiring: Wiring, history: History, rev: str,
                  now: float) -> tuple[PlannedPass, frozenset[str]]:
    """The plan a pass would make if the branch were at ``rev`` (fetched from the
    configured remote), against the live fleet and the journal's history, and the targets
    the branch declares just so. Nothing is executed and no repository code runs at all:
    strategy checks are left to the pull request's own ``validate``. Only what the branch
    already delivers is read from the fleet (:func:`_observe_declared`): a pull request that
    points a Target at another root or namespace, or a file at one the branch does not
    manage, must not read what lives there, not even its digest. Raises RevisionNotFound,
    InvalidInput or a ReconcilerError."""
    source = git_source(wiring.settings)
    snapshot = source.snapshot_at(rev)
    desired = load_desired(snapshot, DesiredCache(cache_salt()), run_strategy_checks=False)
    problems = check_roots(desired, wiring.settings, snapshot.display_prefix)
    if problems:
        raise InvalidInput(problems)
    branch = load_desired(source.snapshot_at(wiring.settings.branch),
                          DesiredCache(cache_salt()), run_strategy_checks=False)
    trusted = frozenset(name for name, target in desired.targets.items()
                        if branch.targets.get(name) == target)
    observed = _observe_declared(wiring, desired, branch, trusted)
    return (PlannedPass(plan(desired, observed, history, now), desired, observed, wiring),
            trusted)


def _observe_declared(wiring: Wiring, desired: Desired, branch: Desired,
                      trusted: frozenset[str]) -> dict[str, ObservedTarget]:
    """The fleet as ``desired`` needs it observed, but read only at the addresses the
    branch itself delivers to on the same target; any other address is shown as absent
    (so planned as a create) and a target the branch declares otherwise is not touched."""
    observed = {}
    for target in desired.targets.values():
        files, pointers = observation_request(desired, target)
        if target.name in trusted:
            own_files, own_pointers = map(set, observation_request(branch, target))
            seen = wiring.fleet(target).observe(
                target, [f for f in files if f in own_files],
                [p for p in pointers if p in own_pointers])
        else:
            seen = ObservedTarget(target.name, f"{target.name} (not observed: the branch "
                                  "declares this target otherwise)", {}, {})
        observed[target.name] = replace(
            seen, files={**{f: ObservedFile(f, None) for f in files}, **seen.files},
            pointers={**{p: ObservedPointer(p, None, None) for p in pointers},
                      **seen.pointers})
    wiring.finish_observing()
    return observed
