"""What a plan will spend, measured from the journal (plan/spend.py does the arithmetic).

Here because it needs three layers the pure part must not import: the SPRT's expected
lengths (gauntlet), the verdicts already remembered and the seconds earlier gates took
(journal).
"""

from __future__ import annotations

from reconciler.gauntlet.budgets import gate_costs
from reconciler.gauntlet.runner import GauntletRunner
from reconciler.journal import Journal
from reconciler.passes import PlannedPass
from reconciler.plan.planner import DAY, History
from reconciler.plan.spend import Spend, spend
from reconciler.vocabulary import Reason, StepKind


def plan_spend(planned: PlannedPass, journal: Journal | None, history: History,
               now: float) -> Spend:
    """``journal``: read-only, or None before the daemon ever ran (nothing measured)."""
    desired = planned.desired
    costs = {model.name: gate_costs(desired.gauntlets[model.gauntlet])
             for model in desired.models.values()
             if model.gauntlet is not None and model.gauntlet in desired.gauntlets}
    remembered: dict[tuple[str, str], str] = {}
    if journal is not None:
        for action in planned.plan.changes:
            model = desired.models.get(action.name)
            if action.kind != "Model" or model is None or model.gauntlet is None \
                    or model.gauntlet not in desired.gauntlets or not action.has(StepKind.GATE):
                continue
            key = GauntletRunner.memo_key(model, desired.gauntlets[model.gauntlet],
                                          action.desired,
                                          journal.latest_canonical(model.name, action.desired),
                                          desired)
            verdict = journal.gate_verdict(key)
            if verdict is not None:
                passed, evidence = verdict
                remembered[(model.name, action.desired)] = (
                    "passed" if passed else "inconclusive"
                    if evidence.get("reason") == Reason.GATE_INCONCLUSIVE else "rejected")
    return spend(planned.plan, desired, history, now, gate_costs=costs,
                 rates=journal.gauntlet_rates() if journal else {}, remembered=remembered,
                 gpu_used_today=journal.gpu_seconds_since(now - DAY) if journal else 0.0)
