"""Gepetto's own tests: the daemon runs them before the strategy may ship."""

from gepetto import Chute, Thresholds, select_chutes

THRESHOLDS = Thresholds(min_margin_usd_per_hour=0.5, scale_up_utilization=0.8,
                        scale_down_utilization=0.2, max_instances_per_chute=4)


def test_unprofitable_chute_is_removed():
    chute = Chute("llama-70b", "h100", 1.0, 2.0, instances=2, utilization=0.9)
    [decision] = select_chutes([chute], {"h100": 8}, THRESHOLDS)
    assert (decision.action, decision.instances) == ("remove", 0)


def test_busy_chute_scales_up_within_free_gpus():
    busy = Chute("qwen-7b", "a100", 6.0, 2.0, instances=1, utilization=0.95)
    [decision] = select_chutes([busy], {"a100": 1}, THRESHOLDS)
    assert (decision.action, decision.instances) == ("scale_up", 2)
    [starved] = select_chutes([busy], {"a100": 0}, THRESHOLDS)
    assert starved.action == "keep"


def test_most_profitable_chute_gets_the_last_gpu():
    rich = Chute("rich", "h100", 9.0, 1.0, instances=0, utilization=0.0)
    poor = Chute("poor", "h100", 3.0, 1.0, instances=0, utilization=0.0)
    decisions = {d.chute_id: d for d in select_chutes([poor, rich], {"h100": 1}, THRESHOLDS)}
    assert decisions["rich"].action == "deploy"
    assert decisions["poor"].action == "keep"


def test_instance_cap_holds():
    hot = Chute("hot", "h100", 9.0, 1.0, instances=4, utilization=1.0)
    [decision] = select_chutes([hot], {"h100": 8}, THRESHOLDS)
    assert decision.instances == 4
