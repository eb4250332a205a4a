"""Plan output: terraform-style text, and JSON with a stable shape (docs/plan-json.md)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from reconciler.desired.documents import Target, percent
from reconciler.durations import format_duration
from reconciler.plan.planner import Action, Plan, Step
from reconciler.plan.spend import GateCosts, Spend, spend_json, spend_lines
from reconciler.vocabulary import StepKind

PLAN_FORMAT_VERSION = 1
_MAX_DIFF_LINES = 400
_SYMBOL = {"create": "+", "update": "~", "flip": "*", "delete": "-", "recall": "<",
           "noop": "="}


def text_diff(old: bytes | None, new: bytes, name: str) -> str | None:
    """A unified diff for text content; None for binary content (digests say enough)."""
    try:
        old_text = "" if old is None else old.decode("utf-8")
        new_text = new.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\0" in old_text or "\0" in new_text:
        return None
    lines = list(difflib.unified_diff(
        old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
        fromfile="/dev/null" if old is None else f"a/{name}", tofile=f"b/{name}"))
    if len(lines) > _MAX_DIFF_LINES:
        lines = [*lines[:_MAX_DIFF_LINES], f"... {len(lines) - _MAX_DIFF_LINES} more lines\n"]
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


_STEP_TEXT = {StepKind.VERIFY: "verify {detail}", StepKind.GATE: "gauntlet {detail}",
              StepKind.GATE_SKIPPED: "gate skipped: {detail}"}


def render_step(step: Step) -> str:
    """``restart: systemctl restart gepetto``, ``gauntlet connect4-gate``, ... (the strings
    docs/plan-json.md promises); a deferred step says until what."""
    text = _STEP_TEXT.get(step.kind, "{kind}: {detail}").format(kind=step.kind,
                                                                detail=step.detail)
    return f"{text} (deferred: {step.deferred})" if step.deferred else text


def _short(digest: str | None) -> str:
    return "absent" if digest is None else f"sha256:{digest[:12]}"


def _summary(plan: Plan) -> dict[str, int]:
    counts = {"create": 0, "update": 0, "flip": 0, "delete": 0, "recall": 0, "noop": 0,
              "waiting": 0, "blocked": 0}
    for action in plan.actions:
        counts[action.op] += 1
        if action.op != "noop" and action.status != "ready":
            counts[action.status] += 1
    return counts


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _cost_line(cost: Mapping[str, object]) -> str:
    return (f"{cost['opponent']}: ~{cost['expectedGamesAtBar']} games for a model at the bar, "
            f"~{cost['expectedGamesAtBarPlusMargin']} at bar + margin, at most "
            f"{cost['maxGames']}")


def render_text(plan: Plan, diffs: Mapping[Action, str | None], locations: Mapping[str, str],
                gate_costs: GateCosts | None = None, spent: Spend | None = None) -> str:
    out = [f"Plan for {plan.revision}", ""]
    for target in plan.targets:
        heading = f"Target {target.name} ({locations.get(target.name, '?')})"
        if target.after:
            soak = f", soak {format_duration(target.soak_seconds)}" if target.soak_seconds else ""
            heading += f" after {target.after.describe()}{soak}"
        out.append(heading)
        if target.name in plan.errors:
            out += [f"  ! cannot observe: {plan.errors[target.name]}", ""]
            continue
        changes = [a for a in plan.changes if a.target == target.name]
        if not changes:
            out.append("  in sync")
        for action in changes:
            change = ("no longer declared" if action.op == "delete" else
                      f"{_short(action.current)} -> {_short(action.desired or None)}"
                      if action.current else _short(action.desired))
            out.append(f"  {_SYMBOL[action.op]} {action.kind} {action.name}: {action.op} "
                       f"{action.location} ({change})")
            for step in action.steps:
                out.append(f"      then {render_step(step)}")
                if step.kind is StepKind.GATE:
                    out += [f"        {_cost_line(cost)}"
                            for cost in (gate_costs or {}).get(action.name, ())]
            if action.drift:
                out.append("      drift: the live content was changed by hand")
            if action.wave is not None:
                out.append(f"      {action.wave.describe()}")
            if action.status != "ready":
                until = f" (until {_when(action.not_before)})" if action.not_before else ""
                out.append(f"      {action.status} ({action.reason}): {action.message}{until}")
            diff = diffs.get(action)
            if diff:
                out += ["      " + line for line in diff.rstrip("\n").split("\n")]
        out.append("")
    if spent is not None and spend_lines(spent):
        out += [*spend_lines(spent), ""]
    counts = _summary(plan)
    if plan.in_sync:
        out.append(f"In sync: {counts['noop']} objects unchanged.")
    else:
        out.append(f"Plan: {counts['create']} to create, {counts['update']} to update, "
                   f"{counts['flip']} pointers to flip, {counts['delete']} to delete, "
                   + (f"{counts['recall']} to recall, " if counts["recall"] else "") +
                   f"{counts['noop']} unchanged; "
                   f"{counts['waiting']} waiting, {counts['blocked']} blocked"
                   + (f"; {len(plan.errors)} targets not observed." if plan.errors else "."))
    return "\n".join(out) + "\n"


def _after_json(target: Target) -> object:
    """A name for ``after: canary`` (as always), else the set and how many of it."""
    after = target.after
    if after is None:
        return None
    if len(after.targets) == 1 and after.count is None and after.share is None:
        return after.targets[0]
    healthy: object = (percent(after.share) if after.share is not None
                       else after.count if after.count is not None else "all")
    return {"targets": list(after.targets), "healthy": healthy}


def render_json(plan: Plan, diffs: Mapping[Action, str | None],
                locations: Mapping[str, str], gate_costs: GateCosts | None = None,
                spent: Spend | None = None) -> str:
    def action_json(action: Action) -> dict[str, Any]:
        return {"target": action.target, "kind": action.kind, "name": action.name,
                "op": action.op, "location": action.location, "current": action.current,
                "desired": action.desired,
                "steps": [render_step(step) for step in action.steps],
                "drift": action.drift, "status": action.status, "reason": action.reason,
                "message": action.message, "notBefore": action.not_before,
                "wave": action.wave.to_json() if action.wave else None,
                "diff": diffs.get(action),
                "gateCost": [dict(cost) for cost in (gate_costs or {}).get(action.name, ())]
                if action.has(StepKind.GATE) else None,
                "analysis": [{"check": step.check, "detail": step.detail,
                              "seconds": step.seconds, "deferred": step.deferred}
                             for step in action.steps if step.kind is StepKind.ANALYSIS]}

    document = {
        "formatVersion": PLAN_FORMAT_VERSION,
        "revision": plan.revision,
        "inSync": plan.in_sync,
        "summary": _summary(plan),
        "targets": [{"name": t.name, "type": t.type,
                     "location": locations.get(t.name), "after": _after_json(t),
                     "soakSeconds": t.soak_seconds, "error": plan.errors.get(t.name)}
                    for t in plan.targets],
        "actions": [action_json(a) for a in plan.actions],
        "cost": None if spent is None else spend_json(spent),
    }
    return json.dumps(document, indent=2) + "\n"

