"""What a plan will spend (plan/spend.py): gates once per digest, remembered verdicts free,
budgets compared with what the window already used, soaks along ``after``."""

from __future__ import annotations

from reconciler.desired.documents import Desired, Gauntlet, build
from reconciler.plan.observed import ObservedTarget
from reconciler.plan.planner import History, plan
from reconciler.plan.spend import spend, spend_json, spend_lines
from tests.builders import ORIGIN, budget, desired, model, observed, strategy, target

NOW = 1_800_000_000.0
DIGEST = "d" * 64
COSTS = {"policy": [{"opponent": "random", "expectedGamesAtBar": 240,
                     "expectedGamesAtBarPlusMargin": 278, "maxGames": 1000},
                    {"opponent": "heuristic", "expectedGamesAtBar": 525,
                     "expectedGamesAtBarPlusMargin": 539, "maxGames": 1000}]}
GATE = Gauntlet("gate", ORIGIN, {"gpuSeconds": 300, "match": {"opponents": []}})


def fleet(*, after_soak: str = "30m", promotions: int | None = None
          ) -> tuple[Desired, dict[str, ObservedTarget]]:
    state = desired(
        targets=(target("staging"), target("production", after="staging", soak=after_soak)),
        strategies=(strategy(targets=("staging", "production")),),
        models=(model(digest=DIGEST, targets=("staging", "production"), gauntlet="gate"),),
        budgets=(budget(restarts_per_hour=3, promotions_per_day=promotions),),
        contents={"gepetto": b"print('v2')\n"})
    state.gauntlets["gate"] = GATE  # type: ignore[index]
    empty = {"files": {"strategies/gepetto.py": None}, "pointers": {"models/policy.pt": None}}
    return state, {name: observed(name, **empty)  # type: ignore[arg-type]
                   for name in ("staging", "production")}


def test_a_gate_is_counted_once_per_digest_and_priced_at_the_measured_rate() -> None:
    state, seen = fleet()
    history = History(healthy_since={("staging", "Model", "policy"): (DIGEST, NOW - 10)})
    made = plan(state, seen, history, NOW)
    spent = spend(made, state, history, NOW, gate_costs=COSTS,
                  rates={"gate": (0.5, 0.25)}, remembered={}, gpu_used_today=3500)
    [gate] = spent.gates
    assert gate.targets == ("staging", "production"), "the second flip is remembered"
    assert (gate.expected_games, gate.expected_games_at_margin, gate.max_games) == \
        (765, 817, 2000)
    assert gate.expected_gpu_seconds == 817 * 0.25
    assert gate.worst_gpu_seconds == 2000 * 0.25, "the cap at the measured rate beats the reserve"
    assert spent.gpu_seconds.planned == 500 and spent.gpu_seconds.limit is None
    document = spend_json(spent)
    assert document["gates"][0]["expectedGpuSeconds"] == 817 * 0.25
    assert document["restarts"] == {"planned": spent.restarts.planned, "used": 0,
                                    "limit": 3, "fits": spent.restarts.planned <= 3}


def test_a_remembered_verdict_plays_nothing_and_costs_nothing() -> None:
    state, seen = fleet()
    made = plan(state, seen, History(), NOW)
    spent = spend(made, state, History(), NOW, gate_costs=COSTS,
                  rates={}, remembered={("policy", DIGEST): "passed"}, gpu_used_today=0)
    [gate] = spent.gates
    assert (gate.remembered, gate.expected_games, gate.worst_gpu_seconds) == ("passed", 0, 0)
    assert any("verdict remembered (passed), no games to play" in line
               for line in spend_lines(spent))


def test_an_unmeasured_gate_is_charged_its_reserve_and_says_the_rest_is_unknown() -> None:
    state, seen = fleet()
    made = plan(state, seen, History(), NOW)
    spent = spend(made, state, History(), NOW, gate_costs=COSTS,
                  rates={}, remembered={}, gpu_used_today=0)
    [gate] = spent.gates
    assert gate.expected_gpu_seconds is None and gate.worst_gpu_seconds == 300
    assert spent.expected_gpu_seconds is None
    assert "expected unknown until it has run once" in "\n".join(spend_lines(spent))


def test_spending_beyond_the_budget_is_shown_before_the_merge() -> None:
    state, seen = fleet()
    history = History(restarts=(NOW - 60, NOW - 120, NOW - 7200))  # one is outside the hour
    made = plan(state, seen, history, NOW)
    spent = spend(made, state, history, NOW, gate_costs=COSTS,
                  rates={}, remembered={}, gpu_used_today=0)
    assert spent.restarts.used == 2 and spent.restarts.limit == 3
    assert spent.restarts.planned >= 2 and not spent.restarts.fits
    assert any(line.startswith("  restarts:") and "EXCEEDS the budget" in line
               for line in spend_lines(spent))


def test_soaks_add_up_along_after() -> None:
    state, seen = fleet(after_soak="30m")
    made = plan(state, seen, History(), NOW)
    spent = spend(made, state, History(), NOW, gate_costs=COSTS,
                  rates={}, remembered={}, gpu_used_today=0)
    soaks = {(h.target, h.subject): h.seconds for h in spent.holds}
    assert soaks[("production", "after staging")] == 1800
    assert spent.longest_seconds == 1800 + max(
        (s for (t, subject), s in soaks.items() if t == "staging"), default=0) + max(
        (s for (t, subject), s in soaks.items()
         if t == "production" and not subject.startswith("after")), default=0)


def test_an_analysis_longer_than_the_health_soak_holds_the_line_for_its_length() -> None:
    state, seen = fleet(after_soak="30m")
    spec = {"source": "gepetto.py", "targets": ["staging", "production"],
            "deliver": {"path": "strategies/gepetto.py"},
            "restart": {"command": ["restart"]},
            "health": {"command": ["probe"], "soak": "5m"},
            "analysis": [{"name": "errors", "interval": "1m", "count": 20,
                          "prometheus": {"query": "q", "max": 1}}]}
    analysed = build("Strategy", {"metadata": {"name": "gepetto"}, "spec": spec}, ORIGIN)
    state.strategies["gepetto"] = analysed  # type: ignore[index]
    made = plan(state, seen, History(), NOW)
    spent = spend(made, state, History(), NOW, gate_costs=COSTS,
                  rates={}, remembered={}, gpu_used_today=0)
    soaks = {(h.target, h.subject): h.seconds for h in spent.holds}
    assert soaks[("staging", "Strategy/gepetto")] == 1200  # 20 x 1m, not the 5m soak
    assert spent.longest_seconds == 1200 + 1800 + 1200
