"""The desired state as typed objects, built from documents that passed their schema."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any, Literal

from reconciler.durations import parse_duration

DEFAULT_CHECK_TIMEOUT_SECONDS = 30.0
DEFAULT_RESTART_TIMEOUT_SECONDS = 60.0
DEFAULT_HEALTH_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a document came from: folder-relative file, its blob id, stream index, line."""

    file: str
    oid: str
    document: int
    line: int


@dataclass(frozen=True, slots=True)
class Window:
    time_zone: str
    days: tuple[str, ...]
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class After:
    """The targets a revision must be healthy on (for the waiting target's ``soak``) before
    it comes here: all of them, a count, or a share (percent, rounded up to whole targets).
    ``after: canary`` is the set of one."""

    targets: tuple[str, ...]
    count: int | None = None
    share: Fraction | None = None  # percent, 0 < share <= 100

    def needed(self, among: int) -> int:
        """How many of ``among`` targets (those of the set the object is sent to) must be
        healthy: a count or a share of more than there are is all of them."""
        if self.share is not None:
            return min(among, math.ceil(self.share * among / 100))
        return among if self.count is None else min(self.count, among)

    def describe(self) -> str:
        """``canary``, ``all of a, b``, ``2 of a, b, c``, ``25% of a, b, c, d, e``."""
        names = ", ".join(self.targets)
        if len(self.targets) == 1:
            return names
        if self.share is not None:
            return f"{percent(self.share)} of {names}"
        return f"{'all' if self.count is None else self.count} of {names}"


def percent(share: Fraction) -> str:
    """25% or 12.5%, as an operator wrote it."""
    return f"{share.numerator}%" if share.denominator == 1 else f"{float(share):g}%"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    origin: Origin
    local_root: str | None
    kube_context: str | None
    kube_namespace: str | None
    after: After | None
    soak_seconds: float
    window: Window | None
    prune: bool
    run_as: str | None = None  # local only: who restart and health commands run as
    adopt: bool = False  # take over existing objects and fields other managers own

    @property
    def is_local(self) -> bool:
        return self.local_root is not None

    @property
    def type(self) -> str:
        """Which fleet adapter serves it (the registry in app.py is keyed by this)."""
        return "local" if self.local_root is not None else "kubernetes"


@dataclass(frozen=True, slots=True)
class ConfigMapRef:
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Delivery:
    path: str | None
    mode: int | None
    config_map: ConfigMapRef | None


@dataclass(frozen=True, slots=True)
class Restart:
    command: tuple[str, ...] | None
    deployment: str | None
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class Health:
    command: tuple[str, ...] | None
    http_url: str | None
    expect_status: int
    timeout_seconds: float
    soak_seconds: float


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a Prometheus value is compared with: the same query just before the change
    (``before``), or ``query`` now (the targets still on the old revision, say)."""

    before: bool
    query: str | None
    max_ratio: float | None
    max_increase: float | None


@dataclass(frozen=True, slots=True)
class PrometheusCheck:
    query: str
    max: float | None
    min: float | None
    baseline: Baseline | None


@dataclass(frozen=True, slots=True)
class LogCheck:
    """Lines matching ``pattern`` (RE2) since the change: ``path`` on a local target, the
    new pods' logs (``container``, else the first) on Kubernetes."""

    pattern: str
    path: str | None
    container: str | None
    max_count: int | None
    max_per_minute: float | None


@dataclass(frozen=True, slots=True)
class ProbeCheck:
    """Today's health check as a kind of analysis check: a command or an HTTP GET."""

    command: tuple[str, ...] | None
    http_url: str | None
    expect_status: int
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class AnalysisCheck:
    """One declared check (``spec.analysis[index]``): measured every ``interval_seconds``,
    ``count`` times (None: for the health soak's length, see :meth:`measurements`)."""

    name: str
    index: int
    interval_seconds: float
    count: int | None
    failure_limit: int
    inconclusive_limit: int
    prometheus: PrometheusCheck | None = None
    log: LogCheck | None = None
    probe: ProbeCheck | None = None

    @property
    def kind(self) -> str:
        if self.prometheus is not None:
            return "prometheus"
        if self.log is not None:
            return "log"
        return "command" if self.probe is not None and self.probe.command else "http"

    def measurements(self, soak_seconds: float) -> int:
        """How many times it is measured: ``count``, else one per interval of the soak."""
        if self.count is not None:
            return self.count
        return max(1, int(soak_seconds / self.interval_seconds + 1e-9))  # 0.6 / 0.2 is 3

    def duration_seconds(self, soak_seconds: float) -> float:
        return self.measurements(soak_seconds) * self.interval_seconds

    @property
    def subject(self) -> str:
        """What is checked, in words (plan output, messages)."""
        if self.prometheus is not None:
            return f"prometheus {self.prometheus.query}"
        if self.log is not None:
            where = self.log.path or "the new pods' logs"
            return f"log {where} =~ /{self.log.pattern}/"
        assert self.probe is not None
        if self.probe.http_url is not None:
            return f"GET {self.probe.http_url}"
        return " ".join(self.probe.command or ())


DEFAULT_FAILURE_LIMIT = 0
DEFAULT_INCONCLUSIVE_LIMIT = 2


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    origin: Origin
    source: str
    entrypoint: str | None
    tests: tuple[str, ...]
    check_timeout_seconds: float
    targets: tuple[str, ...]
    deliver: Delivery
    restart: Restart | None
    health: Health | None
    on_failure: Literal["rollback", "hold"]
    kind: Literal["Strategy"] = "Strategy"
    analysis: tuple[AnalysisCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    origin: Origin
    targets: tuple[str, ...]
    format: Literal["json", "yaml"]
    schema: str | None
    data: Mapping[str, Any]
    deliver: Delivery
    restart: Restart | None
    health: Health | None
    kind: Literal["Config"] = "Config"
    analysis: tuple[AnalysisCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class Artifact:
    uri: str
    sha256: str
    format: str
    max_bytes: int | None = None  # None: the settings' artifacts.maxBytes


@dataclass(frozen=True, slots=True)
class Pointer:
    path: str | None
    config_map: ConfigMapRef | None


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    origin: Origin
    targets: tuple[str, ...]
    artifact: Artifact
    pointer: Pointer
    gauntlet: str | None
    restart: Restart | None
    health: Health | None
    keep: int
    kind: Literal["Model"] = "Model"
    analysis: tuple[AnalysisCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class Gauntlet:
    name: str
    origin: Origin
    spec: Mapping[str, Any]

    @property
    def spec_digest(self) -> str:
        """Part of the memo key of gate results: any change to the gate re-runs it."""
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    origin: Origin
    gauntlet_gpu_seconds_per_day: float | None
    promotions_per_day: int | None
    restarts_per_hour: int | None


Delivered = Strategy | Config


@dataclass(frozen=True)
class Desired:
    """Everything one revision declares, valid and cross-checked."""

    revision: str
    targets: Mapping[str, Target]
    strategies: Mapping[str, Strategy]
    configs: Mapping[str, Config]
    models: Mapping[str, Model]
    gauntlets: Mapping[str, Gauntlet]
    budgets: Mapping[str, Budget]
    # sha256 of what each Strategy or Config delivers, by (kind, name).
    content_digests: Mapping[tuple[str, str], str]
    read_content: Callable[[Delivered], bytes] = field(compare=False)
    # Any file of the folder at this revision, by folder-relative path (model artifacts).
    read_file: Callable[[str], bytes] = field(compare=False)

    @cached_property
    def delivered(self) -> tuple[Delivered, ...]:
        """Configs before strategies: a strategy may read its Config when it restarts.
        Computed once per desired state (the planner asks for it per target)."""
        return (*sorted(self.configs.values(), key=lambda c: c.name),
                *sorted(self.strategies.values(), key=lambda s: s.name))


def _seconds(value: Any, default: float) -> float:
    return parse_duration(value) if isinstance(value, str) else default


def _delivery(spec: Mapping[str, Any]) -> Delivery:
    config_map = spec.get("configMap")
    mode = spec.get("mode")
    return Delivery(spec.get("path"), int(mode, 8) if mode else None,
                    ConfigMapRef(config_map["name"], config_map["key"]) if config_map else None)


def _restart(spec: Mapping[str, Any] | None) -> Restart | None:
    if spec is None:
        return None
    command = spec.get("command")
    return Restart(tuple(command) if command else None, spec.get("deployment"),
                   _seconds(spec.get("timeout"), DEFAULT_RESTART_TIMEOUT_SECONDS))


def _after(spec: str | Mapping[str, Any] | None) -> After | None:
    """``after: canary`` or ``after: {targets: [...], healthy: all | N | "25%"}``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return After((spec,))
    healthy = spec.get("healthy", "all")
    if isinstance(healthy, str) and healthy.endswith("%"):
        return After(tuple(spec["targets"]), share=Fraction(healthy[:-1].strip()))
    return After(tuple(spec["targets"]), None if healthy == "all" else int(healthy))


def _health(spec: Mapping[str, Any] | None) -> Health | None:
    if spec is None:
        return None
    command, http = spec.get("command"), spec.get("http") or {}
    return Health(tuple(command) if command else None, http.get("url"),
                  int(http.get("expectStatus", 200)),
                  _seconds(spec.get("timeout"), DEFAULT_HEALTH_TIMEOUT_SECONDS),
                  _seconds(spec.get("soak"), 0.0))


def _baseline(spec: Mapping[str, Any] | None) -> Baseline | None:
    if spec is None:
        return None
    return Baseline(bool(spec.get("before", False)), spec.get("query"), spec.get("maxRatio"),
                    spec.get("maxIncrease"))


def _check(index: int, spec: Mapping[str, Any]) -> AnalysisCheck:
    prometheus, log, http = spec.get("prometheus"), spec.get("log"), spec.get("http")
    command = spec.get("command")
    return AnalysisCheck(
        spec["name"], index, parse_duration(spec["interval"]), spec.get("count"),
        int(spec.get("failureLimit", DEFAULT_FAILURE_LIMIT)),
        int(spec.get("inconclusiveLimit", DEFAULT_INCONCLUSIVE_LIMIT)),
        prometheus=PrometheusCheck(prometheus["query"], prometheus.get("max"),
                                   prometheus.get("min"), _baseline(prometheus.get("baseline")))
        if prometheus else None,
        log=LogCheck(log["pattern"], log.get("path"), log.get("container"),
                     log.get("maxCount"), log.get("maxPerMinute")) if log else None,
        probe=ProbeCheck(tuple(command) if command else None,
                         http["url"] if http else None,
                         int((http or {}).get("expectStatus", 200)),
                         _seconds((http or {}).get("timeout"), DEFAULT_HEALTH_TIMEOUT_SECONDS))
        if command or http else None)


def _analysis(spec: Mapping[str, Any]) -> tuple[AnalysisCheck, ...]:
    return tuple(_check(index, check) for index, check in enumerate(spec.get("analysis", ())))


def build(kind: str, data: Mapping[str, Any], origin: Origin) -> Any:
    """The typed object for a document that passed its kind's schema."""
    name: str = data["metadata"]["name"]
    spec: Mapping[str, Any] = data["spec"]
    if kind == "Target":
        local, kube, window = spec.get("local"), spec.get("kubernetes"), spec.get("window")
        return Target(
            name, origin, local["root"] if local else None,
            kube.get("context") if kube else None, kube["namespace"] if kube else None,
            _after(spec.get("after")), _seconds(spec.get("soak"), 0.0),
            Window(window["timeZone"], tuple(window.get("days", ())), window["start"],
                   window["end"]) if window else None,
            bool(spec.get("prune", False)), local.get("runAs") if local else None,
            bool(spec.get("adopt", False)))
    if kind == "Strategy":
        return Strategy(name, origin, spec["source"], spec.get("entrypoint"),
                        tuple(spec.get("tests", ())),
                        _seconds(spec.get("checkTimeout"), DEFAULT_CHECK_TIMEOUT_SECONDS),
                        tuple(spec["targets"]), _delivery(spec["deliver"]),
                        _restart(spec.get("restart")), _health(spec.get("health")),
                        spec.get("onFailure", "rollback"), analysis=_analysis(spec))
    if kind == "Config":
        return Config(name, origin, tuple(spec["targets"]), spec.get("format", "json"),
                      spec.get("schema"), spec["data"], _delivery(spec["deliver"]),
                      _restart(spec.get("restart")), _health(spec.get("health")),
                      analysis=_analysis(spec))
    if kind == "Model":
        artifact, pointer = spec["artifact"], spec["pointer"]
        config_map = pointer.get("configMap")
        return Model(name, origin, tuple(spec["targets"]),
                     Artifact(artifact["uri"], artifact["sha256"], artifact.get("format", "file"),
                              artifact.get("maxBytes")),
                     Pointer(pointer.get("path"),
                             ConfigMapRef(config_map["name"], config_map["key"])
                             if config_map else None),
                     spec.get("gauntlet"), _restart(spec.get("restart")),
                     _health(spec.get("health")), int(spec.get("keep", 3)),
                     analysis=_analysis(spec))
    if kind == "Gauntlet":
        return Gauntlet(name, origin, spec)
    if kind == "Budget":
        return Budget(name, origin, spec.get("gauntletGpuSecondsPerDay"),
                      spec.get("promotionsPerDay"), spec.get("restartsPerHour"))
    raise ValueError(f"unknown kind {kind}")
