"""Running a gate from the daemon: a subprocess, bounded, streamed, budgeted, remembered.

Match gauntlets run ``python -m reconciler.gauntlet.worker`` (the only process that
imports torch) in the sandbox (reconciler.sandbox); its JSON lines are validated and read
as they come (progress for the CLI, the systemd STATUS line and metrics), and a timeout
kills its whole process tree. Metrics gauntlets run the declared command ``runs`` times
with ``{artifact}`` substituted, in the sandbox too. Every verdict is remembered by
(candidate digest, previous digest, gauntlet spec digest, game module digest): a PR check
makes the later merge flip at once, and a rejected digest is not re-run until one of those
changes or ``--retry`` forgets it.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import math
import operator
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from reconciler.desired.documents import Budget, Desired, Gauntlet, Model
from reconciler.durations import format_duration, parse_duration
from reconciler.places import ContentStore
from reconciler.sandbox import runner as sandbox
from reconciler.sandbox.channel import GauntletEvents, Malformed, metrics_object
from reconciler.sandbox.runner import ChannelViolation
from reconciler.vocabulary import Reason

DEFAULT_TIMEOUT_SECONDS = 30 * 60
STOP_POLL_SECONDS = 0.5
# CPU work only: a CUDA worker maps the GPU's address range and gets no RLIMIT_AS.
_WORKER_ADDRESS_SPACE = 16 << 30
STOPPED = Reason.GAUNTLET_STOPPED  # a stop request (SIGTERM, a lost Lease): no verdict
RULES: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne}


class VerdictMemory(Protocol):
    """What the runner remembers and consults (the journal implements it): verdicts by
    memo key, the model's canonical history (for ``previous``), GPU-seconds spent, where a
    verified digest came from, and an event per gauntlet run."""

    def gate_verdict(self, key: str) -> tuple[bool, dict[str, Any]] | None: ...

    def record_gate(self, key: str, model: str, digest: str, passed: bool,
                    evidence: Mapping[str, Any]) -> None: ...

    def latest_canonical(self, model: str, other_than: str) -> str | None: ...

    def gpu_seconds_since(self, since: float) -> float: ...

    def artifact_source(self, digest: str) -> tuple[str, str] | None: ...

    def record(self, action: str, phase: str, *, pass_id: int | None = None,
               revision: str | None = None, key: tuple[str, str, str] | None = None,
               intent: int | None = None, detail: Mapping[str, Any] | None = None) -> int: ...


class JobLauncher(Protocol):
    """Runs a worker request as a batch/v1 Job (kube/jobs.py); returns the result event
    (``passed``, ``reason``, evidence) or an error shaped like one."""

    def run(self, gauntlet: Gauntlet, request: dict[str, Any], timeout: float,
            progress: Callable[[str], None]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reason: str  # PascalCase: GatePassed, GateFailed, GateInconclusive, GauntletError, ...
    message: str
    evidence: dict[str, Any]
    remembered: bool = False

    @property
    def outcome(self) -> GateOutcome:
        """passed and rejected are verdicts on the model; inconclusive is the budget spent
        without a decision (never a pass); error is the tool, the device, a timeout or a
        crash (never remembered); stopped and blocked are no verdict at all."""
        if self.passed:
            return "passed"
        if self.evidence.get("inconclusive"):
            return "inconclusive"
        return _OUTCOMES.get(self.reason, "rejected")


GateOutcome = Literal["passed", "rejected", "inconclusive", "error", "stopped", "blocked"]
_OUTCOMES: dict[str, GateOutcome] = {
    Reason.GAUNTLET_ERROR: "error", Reason.GAUNTLET_TIMEOUT: "error",
    "SandboxUnavailable": "error", Reason.GAUNTLET_STOPPED: "stopped",
    Reason.BUDGET_EXHAUSTED: "blocked"}
# What an error says to do, where the cause is one an operator can fix at once.
_FIXES = {"No module named 'torch'": "install the gauntlet extra: pip install "
          "'reconciler[gauntlet]' (torch==2.13.0 first for the CPU build)"}


class GauntletRunner:
    def __init__(self, memory: VerdictMemory, store: ContentStore, *,
                 progress: Callable[[str], None] = lambda t: None,
                 games: Callable[[str, int], None] = lambda opponent, n: None,
                 jobs: JobLauncher | None = None,
                 stop: threading.Event | None = None) -> None:
        self._memory = memory
        self._store = store
        self._jobs = jobs
        self._stop = stop or threading.Event()
        self._progress = progress
        self._games = games

    @staticmethod
    def memo_key(model: Model, gauntlet: Gauntlet, digest: str, previous: str | None,
                 desired: Desired) -> str:
        match = gauntlet.spec.get("match") or {}
        game = match.get("game", "connect4")
        game_digest = (hashlib.sha256(desired.read_file(game)).hexdigest()
                       if game.endswith(".py") else game)
        material = [digest, previous, gauntlet.spec_digest, game_digest, worker_version()]
        return hashlib.sha256(json.dumps(material).encode()).hexdigest()

    def previous(self, model: Model, digest: str) -> str | None:
        """The ``previous`` opponent's digest: the model's last canonical one, if any."""
        return self._memory.latest_canonical(model.name, digest)

    def evaluate(self, model: Model, desired: Desired, digest: str, artifact: Path,
                 candidate_uri: str | None = None) -> Verdict:
        """``candidate_uri``: where a gauntlet Job fetches the candidate (default the
        Model's own artifact URI; ``gauntlet --artifact`` passes its own)."""
        assert model.gauntlet is not None
        gauntlet = desired.gauntlets[model.gauntlet]
        prior = self.previous(model, digest)
        previous = None
        if prior is not None:
            stored = self._store.verified(prior)
            if stored is None:
                # Never a silent first promotion: playing nobody would lower the bar.
                return Verdict(False, Reason.GAUNTLET_ERROR, f"the previous canonical model "
                               f"sha256:{prior[:12]} is missing from the store or did not "
                               "match its digest (quarantined): the gate cannot play it", {})
            previous = (prior, stored)
        key = self.memo_key(model, gauntlet, digest, prior, desired)
        remembered = self._memory.gate_verdict(key)
        if remembered is not None:
            passed, evidence = remembered
            return Verdict(passed, Reason.GATE_PASSED if passed
                           else evidence.get("reason", Reason.GATE_FAILED),
                           f"{_summary(evidence)} (remembered)", evidence, remembered=True)
        budget = next(iter(desired.budgets.values()), None)
        reserve = float(gauntlet.spec.get("gpuSeconds", 0))
        refusal = self._budget_refusal(budget, reserve)
        if refusal is not None:
            return Verdict(False, "BudgetExhausted", refusal, {})
        started = time.monotonic()
        if "metrics" in gauntlet.spec:
            evidence = self._metrics(gauntlet, artifact)
        elif gauntlet.spec.get("runIn") == "job":
            evidence = self._job(candidate_uri or model.artifact.uri, model, gauntlet, desired,
                                 digest, previous[0] if previous else None)
        else:
            evidence = self._match(gauntlet, desired, artifact,
                                   previous[1] if previous else None)
        if evidence.get("reason") == STOPPED:
            # Not a verdict on the model: nothing is remembered, the next pass runs it again.
            return Verdict(False, STOPPED, str(evidence["error"]), evidence)
        evidence.setdefault("gpuSeconds", 0.0)
        evidence["seconds"] = round(time.monotonic() - started, 3)
        self._memory.record("gauntlet", "done", key=("-", "Model", model.name),
                             detail={"digest": digest, "gauntlet": gauntlet.name,
                                     "passed": evidence["passed"],
                                     "gpuSeconds": evidence["gpuSeconds"],
                                     "seconds": evidence["seconds"],
                                     "games": sum(int(o.get("games", 0)) for o in
                                                  evidence.get("opponents", ())),
                                     "summary": _summary(evidence)})
        reason = Reason.GATE_PASSED if evidence["passed"] \
            else evidence.get("reason", Reason.GATE_FAILED)
        verdict = Verdict(bool(evidence["passed"]), reason, _summary(evidence), evidence)
        if verdict.outcome == "error":
            # The tool failed, not the model: never remembered, so the next pass retries.
            fix = next((hint for cause, hint in _FIXES.items() if cause in verdict.message), "")
            return Verdict(False, reason, verdict.message + (f"; fix: {fix}" if fix else ""),
                           evidence)
        self._memory.record_gate(key, model.name, digest, verdict.passed, evidence)
        return verdict

    def _budget_refusal(self, budget: Budget | None, reserve: float) -> str | None:
        if budget is None or budget.gauntlet_gpu_seconds_per_day is None:
            return None
        used = self._memory.gpu_seconds_since(time.time() - 86400)
        if used + reserve > budget.gauntlet_gpu_seconds_per_day:
            return (f"GPU budget exhausted: {used:.0f} s used of "
                    f"{budget.gauntlet_gpu_seconds_per_day:.0f} s today, this gauntlet "
                    f"reserves {reserve:.0f} s")
        return None

    def _match(self, gauntlet: Gauntlet, desired: Desired, artifact: Path,
               previous: Path | None) -> dict[str, Any]:
        spec = dict(gauntlet.spec)
        timeout = parse_duration(spec["timeout"]) if "timeout" in spec else \
            DEFAULT_TIMEOUT_SECONDS
        with tempfile.TemporaryDirectory(prefix="reconciler-gauntlet-") as scratch_name:
            scratch = Path(scratch_name)
            job: dict[str, Any] = {"candidate": str(artifact),
                                   "previous": str(previous) if previous else None,
                                   "spec": spec}
            game = spec["match"]["game"]
            if game.endswith(".py"):
                module = scratch / "game.py"
                module.write_bytes(desired.read_file(game))
                job["gameModule"] = str(module)
            (scratch / "job.json").write_text(json.dumps(job))
            return self._stream([sys.executable, "-m", "reconciler.gauntlet.worker",
                                 str(scratch / "job.json")], scratch, timeout, gauntlet)

    def _job(self, candidate_uri: str, model: Model, gauntlet: Gauntlet, desired: Desired,
             digest: str, previous: str | None) -> dict[str, Any]:
        """The same worker request, with artifacts as URIs the Job fetches and verifies."""
        if self._jobs is None:
            return {"passed": False, "reason": "GauntletError",
                    "error": f"gauntlet {gauntlet.name} has runIn: job, but the settings "
                    "have no gauntletJob (namespace, image)"}
        sources: dict[str, tuple[str, tuple[str, str] | None]] = {
            "candidate": (digest, (candidate_uri, model.artifact.format))}
        if previous is not None:
            sources["previous"] = (previous, self._memory.artifact_source(previous))
        request: dict[str, Any] = {"spec": dict(gauntlet.spec), "previous": None}
        for role, (role_digest, source) in sources.items():
            if source is None or "://" not in source[0]:
                return {"passed": False, "reason": "GauntletError",
                        "error": f"gauntlet {gauntlet.name} runs as a Job, which fetches "
                        f"the {role} model itself: sha256:{role_digest[:12]} needs a URI "
                        "(http(s):// or file://), not a path in the repository"}
            request[role] = {"uri": source[0], "sha256": role_digest, "format": source[1]}
        game = gauntlet.spec["match"]["game"]
        if game.endswith(".py"):
            request["gameSource"] = desired.read_file(game).decode()
        timeout = parse_duration(gauntlet.spec["timeout"]) if "timeout" in gauntlet.spec \
            else DEFAULT_TIMEOUT_SECONDS
        return self._jobs.run(gauntlet, request, timeout, self._progress)

    def _stream(self, argv: list[str], scratch: Path, timeout: float,
                gauntlet: Gauntlet) -> dict[str, Any]:
        job = json.loads(Path(argv[-1]).read_text())  # our own request: what to bind
        inputs = [Path(job[role]) for role in ("candidate", "previous") if job.get(role)]
        device = str(gauntlet.spec.get("device", "auto"))
        devices = () if device == "cpu" else tuple(glob.glob("/dev/nvidia*"))
        launch = sandbox.Launch(
            tuple(argv), scratch,
            sandbox.Limits(cpu_seconds=math.ceil(timeout) + 1,
                           address_space_bytes=None if devices else _WORKER_ADDRESS_SPACE,
                           processes=1024, open_files=1024),
            read_only=(scratch, *inputs), environment={"PYTHONUNBUFFERED": "1"},
            package=True, devices=devices, max_line_bytes=1 << 20)
        try:
            process = sandbox.current().start(launch)
        except (sandbox.SandboxUnavailable, OSError) as error:
            return {"passed": False, "reason": "GauntletError",
                    "error": f"gauntlet {gauntlet.name} cannot run: {error}"}
        events = GauntletEvents(opponent["name"]
                                for opponent in gauntlet.spec["match"]["opponents"])
        deadline = time.monotonic() + timeout
        played: dict[str, int] = {}
        final: dict[str, Any] | None = None
        try:
            while True:
                if self._stop.is_set():
                    process.kill()
                    return {"passed": False, "reason": STOPPED,
                            "error": f"gauntlet {gauntlet.name} was stopped; its processes "
                            "were killed"}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    process.kill()
                    return {"passed": False, "reason": "GauntletTimeout",
                            "error": f"gauntlet {gauntlet.name} did not finish within "
                            f"{format_duration(timeout)}; its processes were killed"}
                try:
                    lines = process.poll(min(STOP_POLL_SECONDS, remaining))
                    if lines is None:
                        break
                    accepted = [events.accept(line) for line in lines]
                except (ChannelViolation, Malformed) as error:
                    process.kill()
                    return {"passed": False, "reason": "GauntletError",
                            "error": f"gauntlet {gauntlet.name}: the worker's output broke "
                            f"its contract ({error}); its processes were killed"}
                for event in accepted:
                    if event["event"] == "progress":
                        opponent = event["opponent"]
                        new = event["games"] - played.get(opponent, 0)
                        played[opponent] = event["games"]
                        self._games(opponent, new)
                        self._progress(f"gauntlet {gauntlet.name}: {opponent} score "
                                       f"{event['score']} after {event['games']} games")
                    elif event["event"] in ("result", "error"):
                        final = event
            returncode = process.wait()
            log_tail = process.log_tail()
        finally:
            process.close()
        if final is None or final.get("event") == "error":
            lines = log_tail.strip().splitlines()
            detail = (final or {}).get("error") or (lines[-1] if lines else "") or \
                f"exit code {returncode}"
            return {"passed": False, "reason": "GauntletError",
                    "error": f"gauntlet {gauntlet.name} failed to run: {detail}"}
        final.pop("event")
        return final

    def _metrics(self, gauntlet: Gauntlet, artifact: Path) -> dict[str, Any]:
        spec = gauntlet.spec["metrics"]
        timeout = parse_duration(gauntlet.spec.get("timeout", "30m"))
        runs: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="reconciler-metrics-") as scratch:
            argv = [part.replace("{artifact}", str(artifact)) for part in spec["command"]]
            for run in range(int(spec.get("runs", 1))):
                self._progress(f"gauntlet {gauntlet.name}: metrics run {run + 1}")
                launch = sandbox.Launch(
                    tuple(argv), Path(scratch),
                    sandbox.Limits(cpu_seconds=math.ceil(timeout) + 1,
                                   address_space_bytes=_WORKER_ADDRESS_SPACE),
                    read_only=(artifact,), network=spec.get("network") is True)
                try:
                    finished = sandbox.current().run(launch, timeout, stop=self._stop)
                except (sandbox.SandboxUnavailable, OSError) as error:
                    return {"passed": False, "reason": "GauntletError",
                            "error": f"cannot run {argv[0]}: {error}"}
                if finished.stopped:
                    return {"passed": False, "reason": STOPPED,
                            "error": f"gauntlet {gauntlet.name} was stopped; its metrics "
                            "command was killed"}
                if finished.timed_out:
                    return {"passed": False, "reason": "GauntletTimeout",
                            "error": f"metrics command did not finish within "
                            f"{format_duration(timeout)}"}
                if finished.violation is not None:
                    return {"passed": False, "reason": "GauntletError",
                            "error": f"metrics command was stopped: {finished.violation}"}
                try:
                    metrics = metrics_object(finished.lines[-1] if finished.lines else None)
                except Malformed as error:
                    metrics = None
                    problem = str(error)
                if finished.returncode != 0 or metrics is None:
                    return {"passed": False, "reason": "GauntletError",
                            "error": f"metrics command exited with {finished.returncode} and "
                            "its last line was not a JSON object of metrics"
                            + ("" if metrics is not None else f" ({problem})"),
                            "output": finished.log_tail[-400:]}
                runs.append(metrics)
        if any(run != runs[0] for run in runs[1:]):
            return {"passed": False, "reason": "GateFailed", "runs": runs,
                    "error": f"the {len(runs)} runs disagree: the evaluation is not "
                    "deterministic"}
        failed = []
        for rule in spec["rules"]:
            value = runs[0].get(rule["metric"])
            if not isinstance(value, int | float) or isinstance(value, bool) \
                    or math.isnan(value):
                failed.append(f"{rule['metric']} is missing or not a number ({value!r})")
            elif not RULES[rule["op"]](value, rule["value"]):
                failed.append(f"{rule['metric']} {value} is not {rule['op']} {rule['value']}")
        return {"passed": not failed, "metrics": runs[0], "runs": len(runs),
                "failed": failed, "reason": "GatePassed" if not failed else "GateFailed"}


_PACKAGE = Path(__file__).resolve().parent


@functools.cache
def worker_version(package: Path = _PACKAGE) -> str:
    """The digest of the code that decides a verdict (this package's worker, engine, games
    and statistics): an upgrade that changes how games are played or judged is a new input
    of every verdict, so nothing remembered under the old code is trusted."""
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0")
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _summary(evidence: dict[str, Any]) -> str:
    if "error" in evidence:
        return str(evidence["error"])
    if "opponents" in evidence:
        parts = []
        for opponent in evidence["opponents"]:
            if "skipped" in opponent:
                parts.append(f"{opponent['opponent']}: skipped ({opponent['skipped']})")
                continue
            low, high = opponent["interval"]
            verdict = "pass" if opponent["passed"] else "FAIL"
            if opponent.get("inconclusive"):
                verdict = (f"INCONCLUSIVE, about {opponent.get('expectedMoreGames', '?')} "
                           "more games expected to decide")
            parts.append(f"{opponent['opponent']}: {opponent['score']:.3f} [{low:.3f}, "
                         f"{high:.3f}] in {opponent['games']} games vs bar "
                         f"{opponent['minScore']} -> {verdict} ({opponent['reason']})")
        return "; ".join(parts)
    if evidence.get("failed"):
        return "; ".join(evidence["failed"])
    return f"metrics {evidence.get('metrics')} pass every rule"
