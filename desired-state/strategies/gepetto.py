"""Gepetto: choose which chutes to deploy, scale up, scale down or remove.

A chute earns revenue per instance-hour and costs GPU time. Gepetto keeps the chutes whose
margin clears a floor, scales on utilization, and never exceeds the GPU inventory or the
per-chute instance cap. Thresholds come from the delivered Config (gepetto.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Action = Literal["deploy", "scale_up", "scale_down", "remove", "keep"]


@dataclass(frozen=True)
class Chute:
    chute_id: str
    gpu_type: str
    revenue_per_hour_usd: float
    cost_per_hour_usd: float
    instances: int
    utilization: float  # 0..1 over the last window


@dataclass(frozen=True)
class Thresholds:
    min_margin_usd_per_hour: float
    scale_up_utilization: float
    scale_down_utilization: float
    max_instances_per_chute: int


@dataclass(frozen=True)
class Decision:
    chute_id: str
    action: Action
    instances: int
    reason: str


def load_thresholds(path: Path) -> Thresholds:
    """Thresholds from the delivered Config file."""
    data = json.loads(path.read_text())["thresholds"]
    return Thresholds(
        min_margin_usd_per_hour=float(data["min_margin_usd_per_hour"]),
        scale_up_utilization=float(data["scale_up_utilization"]),
        scale_down_utilization=float(data["scale_down_utilization"]),
        max_instances_per_chute=int(data["max_instances_per_chute"]),
    )


def select_chutes(chutes: list[Chute], free_gpus: dict[str, int],
                  thresholds: Thresholds) -> list[Decision]:
    """One decision per chute, most profitable first; GPUs are handed out in that order."""
    free = dict(free_gpus)
    decisions = []
    ranked = sorted(chutes, key=lambda c: c.revenue_per_hour_usd - c.cost_per_hour_usd,
                    reverse=True)
    for chute in ranked:
        margin = chute.revenue_per_hour_usd - chute.cost_per_hour_usd
        if margin < thresholds.min_margin_usd_per_hour:
            action: Action = "remove" if chute.instances else "keep"
            decisions.append(Decision(chute.chute_id, action, 0,
                                      f"margin {margin:.2f}/h below the floor"))
            continue
        wanted = chute.instances
        if chute.instances == 0:
            wanted = 1
        elif chute.utilization >= thresholds.scale_up_utilization:
            wanted = chute.instances + 1
        elif chute.utilization <= thresholds.scale_down_utilization and chute.instances > 1:
            wanted = chute.instances - 1
        wanted = min(wanted, thresholds.max_instances_per_chute)
        extra = max(0, wanted - chute.instances)
        available = free.get(chute.gpu_type, 0)
        if extra > available:
            wanted = chute.instances + available
            extra = available
        free[chute.gpu_type] = available - extra
        if chute.instances == 0:
            action = "deploy" if wanted else "keep"
        elif wanted > chute.instances:
            action = "scale_up"
        elif wanted < chute.instances:
            action = "scale_down"
        else:
            action = "keep"
        decisions.append(Decision(chute.chute_id, action, wanted,
                                  f"margin {margin:.2f}/h, utilization {chute.utilization:.0%}"))
    return decisions
