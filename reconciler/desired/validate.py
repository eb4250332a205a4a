"""Cross-document rules: references resolve, names are unique, paths stay inside, targets
are ordered without cycles, and every object can actually be delivered where it is sent.

Pure: it reads only the snapshot's entry table and the typed objects.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import re2

from reconciler.desired.documents import (
    AnalysisCheck,
    Budget,
    Config,
    Delivery,
    Gauntlet,
    Health,
    Model,
    Origin,
    Restart,
    Strategy,
    Target,
    percent,
)
from reconciler.source.snapshot import Entry, PathError, link_destination, normalize, resolve

BUILTIN_GAMES = ("connect4",)
DEFAULT_MARGIN = 0.05  # the SPRT's margin when neither the opponent nor ``sprt`` sets one
ARTIFACT_SCHEMES = ("file", "http", "https")

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """A broken rule, located by document and JSON path, or by line and column."""

    file: str
    message: str
    rule: str
    document: int | None = None
    path: Path = ()
    at_key: bool = False
    line: int = 1
    col: int = 1


def _at(origin: Origin, path: Path, message: str, rule: str, *, at_key: bool = False) -> Finding:
    return Finding(origin.file, message, rule, origin.document, path, at_key)


Obj = Target | Strategy | Config | Model | Gauntlet | Budget


def cross_check(entries: Mapping[str, Entry], objects: Iterable[Obj],
                declared: set[tuple[str, str]]) -> list[Finding]:
    """Every cross-document finding. ``declared`` holds (kind, name) of every document,
    valid or not, so that one broken document does not also make its references dangle."""
    objects = list(objects)
    findings: list[Finding] = list(_symlinks(entries))
    targets = {o.name: o for o in objects if isinstance(o, Target)}
    gauntlets = {o.name for o in objects if isinstance(o, Gauntlet)}
    findings += _unique_names(objects)
    findings += _target_order(targets, declared)
    budgets = [o for o in objects if isinstance(o, Budget)]
    for extra in budgets[1:]:
        findings.append(_at(extra.origin, ("metadata", "name"),
                            f"a second Budget ({extra.name}); one Budget governs the daemon",
                            "budget-unique"))
    for obj in objects:
        if isinstance(obj, Target):
            findings += _target(obj)
        elif isinstance(obj, Strategy | Config | Model):
            findings += _placement(obj, targets, declared)
            findings += analysis_findings(obj)
            if isinstance(obj, Strategy):
                findings += _strategy_files(obj, entries)
            elif isinstance(obj, Config) and obj.schema is not None:
                findings += _file_ref(obj.origin, ("spec", "schema"), obj.schema, entries,
                                      suffixes=(".json",))
            elif isinstance(obj, Model):
                findings += _model(obj, entries, gauntlets, declared)
        elif isinstance(obj, Gauntlet):
            findings += _gauntlet(obj, entries)
    findings += _delivery_conflicts(objects, targets)
    findings += _shared_namespaces(targets)
    return findings


def _shared_namespaces(targets: Mapping[str, Target]) -> Iterator[Finding]:
    """Each Kubernetes Target owns its namespace: two on one namespace would apply the same
    ConfigMaps with the same field manager and undo each other."""
    first: dict[tuple[str | None, str | None], str] = {}
    for target in sorted(targets.values(), key=lambda t: t.name):
        if target.is_local:
            continue
        place = (target.kube_context, target.kube_namespace)
        owner = first.setdefault(place, target.name)
        if owner != target.name:
            yield _at(target.origin, ("spec", "kubernetes", "namespace"),
                      f"namespace {target.kube_namespace!r} "
                      f"({target.kube_context or 'current context'}) is already target "
                      f"{owner!r}; give each Target its own namespace", "shared-namespace")


def _symlinks(entries: Mapping[str, Entry]) -> Iterator[Finding]:
    for entry in entries.values():
        if entry.kind == "link":
            try:
                link_destination(entry)
            except PathError as error:
                yield Finding(entry.path, str(error), error.rule)


def _unique_names(objects: list[Obj]) -> Iterator[Finding]:
    seen: dict[tuple[str, str], Origin] = {}
    for obj in objects:
        key = (type(obj).__name__, obj.name)
        first = seen.setdefault(key, obj.origin)
        if first is not obj.origin:
            yield _at(obj.origin, ("metadata", "name"),
                      f"{key[0]} {obj.name!r} is already declared in {first.file} "
                      f"(line {first.line})", "duplicate-name")


def _target_order(targets: Mapping[str, Target],
                  declared: set[tuple[str, str]]) -> Iterator[Finding]:
    """``after`` names declared targets, asks for no more of them than it names, and no
    target waits on itself through any chain of waves."""
    for target in targets.values():
        after = target.after
        if after is None:
            continue
        single = len(after.targets) == 1 and after.count is None and after.share is None
        for index, upstream in enumerate(after.targets):
            where: Path = ("spec", "after") if single else ("spec", "after", "targets", index)
            if upstream == target.name:
                yield _at(target.origin, where, f"target {target.name!r} cannot come "
                          "after itself", "after-cycle")
            elif ("Target", upstream) not in declared:
                yield _at(target.origin, where, f"after: no Target named "
                          f"{upstream!r}{_known(targets)}", "dangling-target")
        if after.share is not None and not 0 < after.share <= 100:
            yield _at(target.origin, ("spec", "after", "healthy"), f"a share of "
                      f"{percent(after.share)} of the targets it waits for; a share is more "
                      "than 0% and at most 100%", "wave-share")
        if after.count is not None and after.count > len(after.targets):
            yield _at(target.origin, ("spec", "after", "healthy"), f"waits for "
                      f"{after.count} healthy targets but names only {len(after.targets)}",
                      "wave-count")
        cycle = _cycle_through(target.name, targets)
        if cycle:
            yield _at(target.origin, ("spec", "after"), "targets wait on each other in a "
                      f"cycle: {' -> '.join(cycle)}", "after-cycle")


def _cycle_through(start: str, targets: Mapping[str, Target]) -> list[str] | None:
    """A chain of ``after`` from ``start`` back to itself (through other targets), if any."""
    path, seen = [start], {start}

    def walk(name: str) -> list[str] | None:
        after = targets[name].after
        for upstream in after.targets if after else ():
            if upstream == start and name != start:
                return [*path, start]
            if upstream in seen or upstream not in targets:
                continue
            seen.add(upstream)
            path.append(upstream)
            found = walk(upstream)
            if found:
                return found
            path.pop()
        return None

    return walk(start)


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    return f" (declared: {', '.join(listed)})" if listed else " (none is declared)"


def _target(target: Target) -> Iterator[Finding]:
    if target.prune and target.is_local:
        yield _at(target.origin, ("spec", "prune"), "prune applies to Kubernetes targets; "
                  "files of objects no longer declared stay on a local target", "prune-local")
    if target.window is not None:
        try:
            zoneinfo.ZoneInfo(target.window.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            yield _at(target.origin, ("spec", "window", "timeZone"),
                      f"unknown time zone {target.window.time_zone!r}; use an IANA name such "
                      "as 'Europe/Berlin' or 'UTC'", "time-zone")


def _placement(obj: Strategy | Config | Model, targets: Mapping[str, Target],
               declared: set[tuple[str, str]]) -> Iterator[Finding]:
    for index, name in enumerate(obj.targets):
        target = targets.get(name)
        if target is None:
            if ("Target", name) not in declared:
                yield _at(obj.origin, ("spec", "targets", index),
                          f"no Target named {name!r}{_known(targets)}", "dangling-target")
            continue
        if isinstance(obj, Model):
            yield from _pointer_fits(obj, target)
        else:
            yield from _delivery_fits(obj.origin, obj.deliver, target)
        if obj.restart is not None:
            yield from _restart_fits(obj.origin, obj.restart, target)
        for check in obj.analysis:
            yield from _check_fits(obj.origin, check, target, obj.restart)
        if obj.health is not None and not target.is_local:
            yield from _rollout_health(obj.origin, obj.restart, obj.health, target)
        elif obj.health is not None and obj.health.command is None \
                and obj.health.http_url is None:
            yield _at(obj.origin, ("spec", "health"), f"target {target.name!r} is local: "
                      "health needs 'command' or 'http'", "health-kind")


PLACEHOLDERS = ("target", "kind", "name", "revision", "digest")


def analysis_findings(obj: Strategy | Config | Model) -> Iterator[Finding]:
    """Names unique; a count, or a health soak to last; a failure limit below the number of
    measurements; patterns that compile (RE2: linear
    time, so a hostile pattern cannot hang the daemon); only known ``{{placeholders}}``."""
    seen: set[str] = set()
    soak = obj.health.soak_seconds if obj.health is not None else 0.0
    for check in obj.analysis:
        at: Path = ("spec", "analysis", check.index)
        if check.name in seen:
            yield _at(obj.origin, (*at, "name"), f"a second analysis check named "
                      f"{check.name!r}", "analysis-unique")
        seen.add(check.name)
        if check.count is None and soak <= 0:
            yield _at(obj.origin, at, f"analysis check {check.name!r} needs 'count', or a "
                      "'health.soak' whose length it lasts", "analysis-count")
        elif check.failure_limit >= (measurements := check.measurements(soak)):
            yield _at(obj.origin, (*at, "failureLimit"), f"analysis check {check.name!r}: "
                      f"failureLimit {check.failure_limit} tolerates all {measurements} "
                      "measurements, so it could never fail", "analysis-limits")
        if check.log is not None:
            try:
                re2.compile(check.log.pattern)
            except re2.error as error:
                yield _at(obj.origin, (*at, "log", "pattern"), f"pattern "
                          f"{check.log.pattern!r} does not compile (RE2 syntax): {error}",
                          "log-pattern")
            if check.log.path is not None and not check.log.path.startswith("/"):
                yield from _relative(obj.origin, (*at, "log", "path"), check.log.path)
        if check.prometheus is not None:
            queries = [("query", check.prometheus.query)]
            baseline = check.prometheus.baseline
            if baseline is not None and baseline.query is not None:
                queries.append(("baseline", baseline.query))
            for field_name, query in queries:
                path: Path = (*at, "prometheus", field_name) if field_name == "query" \
                    else (*at, "prometheus", "baseline", "query")
                for unknown in _unknown_placeholders(query):
                    yield _at(obj.origin, path, f"unknown placeholder {{{{{unknown}}}}}; "
                              f"known: {', '.join(PLACEHOLDERS)}", "analysis-placeholder")


def _unknown_placeholders(query: str) -> list[str]:
    found = []
    rest = query
    while "{{" in rest:
        rest = rest.split("{{", 1)[1]
        name, _, rest = rest.partition("}}")
        if name.strip() not in PLACEHOLDERS:
            found.append(name.strip())
    return found


def _check_fits(origin: Origin, check: AnalysisCheck, target: Target,
                restart: Restart | None) -> Iterator[Finding]:
    at: Path = ("spec", "analysis", check.index)
    if not target.is_local and check.log is not None \
            and (restart is None or restart.deployment is None):
        yield _at(origin, (*at, "log"), f"target {target.name!r} is Kubernetes: a log check "
                  "reads the new pods of 'restart.deployment'; declare one", "log-path")
    if target.is_local and check.log is not None and check.log.path is None:
        yield _at(origin, (*at, "log"), f"target {target.name!r} is local: a log check needs "
                  "'path' (beneath the target's root, or an absolute path beneath one of "
                  "reconciler.yaml's analysis.logRoots)", "log-path")
    if not target.is_local and check.probe is not None and check.probe.command is not None:
        yield _at(origin, (*at, "command"), f"target {target.name!r} is Kubernetes: a command "
                  "check runs on a local target only; use 'http', 'log' or 'prometheus'",
                  "analysis-kind")


def _delivery_fits(origin: Origin, deliver: Delivery, target: Target) -> Iterator[Finding]:
    if target.is_local:
        if deliver.path is None:
            yield _at(origin, ("spec", "deliver"), f"target {target.name!r} is local: "
                      "deliver needs 'path' (under the target's root)", "deliver-path")
        else:
            yield from _relative(origin, ("spec", "deliver", "path"), deliver.path)
    elif deliver.config_map is None:
        yield _at(origin, ("spec", "deliver"), f"target {target.name!r} is Kubernetes: "
                  "deliver needs 'configMap'", "deliver-configmap")


def _pointer_fits(model: Model, target: Target) -> Iterator[Finding]:
    if target.is_local:
        if model.pointer.path is None:
            yield _at(model.origin, ("spec", "pointer"), f"target {target.name!r} is local: "
                      "the pointer needs 'path' (a symlink under the target's root)",
                      "pointer-path")
        else:
            yield from _relative(model.origin, ("spec", "pointer", "path"), model.pointer.path)
    elif model.pointer.config_map is None:
        yield _at(model.origin, ("spec", "pointer"), f"target {target.name!r} is Kubernetes: "
                  "the pointer needs 'configMap'", "pointer-configmap")


def _restart_fits(origin: Origin, restart: Restart, target: Target) -> Iterator[Finding]:
    if target.is_local and restart.command is None:
        yield _at(origin, ("spec", "restart"), f"target {target.name!r} is local: restart "
                  "needs 'command'", "restart-kind")
    if not target.is_local and restart.deployment is None:
        yield _at(origin, ("spec", "restart"), f"target {target.name!r} is Kubernetes: "
                  "restart needs 'deployment'", "restart-kind")


def _rollout_health(origin: Origin, restart: Restart | None, health: Health,
                    target: Target) -> Iterator[Finding]:
    """On Kubernetes the rollout is the health check (the new pods' readiness probes);
    ``health`` may only add a soak that watches the new pods."""
    if health.command is not None or health.http_url is not None:
        yield _at(origin, ("spec", "health"), f"target {target.name!r} is Kubernetes: its "
                  "health check is the Deployment's rollout (readiness probes); declare only "
                  "'soak' and 'timeout' here", "health-kind")
    elif restart is None:
        yield _at(origin, ("spec", "health"), f"target {target.name!r} is Kubernetes: a "
                  "health soak watches the pods of 'restart.deployment'; declare one",
                  "health-kind")


def _relative(origin: Origin, path: Path, value: str) -> Iterator[Finding]:
    try:
        normalize(value)
    except PathError as error:
        yield _at(origin, path, str(error), error.rule)


def _file_ref(origin: Origin, path: Path, value: str, entries: Mapping[str, Entry], *,
              suffixes: tuple[str, ...]) -> Iterator[Finding]:
    try:
        entry = resolve(entries, value)
    except PathError as error:
        yield _at(origin, path, str(error), error.rule)
        return
    if not entry.path.endswith(suffixes):
        yield _at(origin, path, f"{value!r} must be a {' or '.join(suffixes)} file",
                  "file-type")


def _strategy_files(strategy: Strategy, entries: Mapping[str, Entry]) -> Iterator[Finding]:
    yield from _file_ref(strategy.origin, ("spec", "source"), strategy.source, entries,
                         suffixes=(".py",))
    for index, test in enumerate(strategy.tests):
        yield from _file_ref(strategy.origin, ("spec", "tests", index), test, entries,
                             suffixes=(".py",))


def _model(model: Model, entries: Mapping[str, Entry], gauntlets: set[str],
           declared: set[tuple[str, str]]) -> Iterator[Finding]:
    if model.gauntlet is not None and ("Gauntlet", model.gauntlet) not in declared:
        yield _at(model.origin, ("spec", "gauntlet"), f"no Gauntlet named "
                  f"{model.gauntlet!r}{_known(gauntlets)}", "dangling-gauntlet")
    uri = model.artifact.uri
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if scheme and scheme not in ARTIFACT_SCHEMES:
        yield _at(model.origin, ("spec", "artifact", "uri"), f"artifact URI scheme {scheme!r} "
                  f"is not supported; use a path in the folder, {', '.join(ARTIFACT_SCHEMES)}",
                  "artifact-uri")
    elif not scheme:
        try:
            resolve(entries, uri)
        except PathError as error:
            yield _at(model.origin, ("spec", "artifact", "uri"), str(error), error.rule)


def _gauntlet(gauntlet: Gauntlet, entries: Mapping[str, Entry]) -> Iterator[Finding]:
    match = gauntlet.spec.get("match")
    if match is None:
        return
    game = match["game"]
    if game not in BUILTIN_GAMES:
        yield from _file_ref(gauntlet.origin, ("spec", "match", "game"), game, entries,
                             suffixes=(".py",))
    seen: set[str] = set()
    for index, opponent in enumerate(match["opponents"]):
        if opponent["name"] in seen:
            yield _at(gauntlet.origin, ("spec", "match", "opponents", index, "name"),
                      f"opponent {opponent['name']!r} is listed twice", "duplicate-opponent")
        seen.add(opponent["name"])
        margin = opponent.get("margin", match.get("sprt", {}).get("margin", DEFAULT_MARGIN))
        if not 0 < opponent["minScore"] < opponent["minScore"] + margin < 1:
            yield _at(gauntlet.origin, ("spec", "match", "opponents", index, "minScore"),
                      f"opponent {opponent['name']!r}: the SPRT needs 0 < minScore < "
                      f"minScore + margin < 1, got {opponent['minScore']} and margin "
                      f"{margin}", "sprt-bounds")


def _delivery_conflicts(objects: list[Obj], targets: Mapping[str, Target]) -> Iterator[Finding]:
    """Two objects writing the same file (or ConfigMap key) on one target would fight."""
    claimed: dict[tuple[str, str], str] = {}
    for obj in objects:
        if not isinstance(obj, Strategy | Config | Model):
            continue
        for target_name in obj.targets:
            target = targets.get(target_name)
            if target is None:
                continue
            if isinstance(obj, Model):
                ref, spec_path = obj.pointer.path, ("spec", "pointer")
                config_map = obj.pointer.config_map
            else:
                ref, spec_path = obj.deliver.path, ("spec", "deliver")
                config_map = obj.deliver.config_map
            if target.is_local and ref is not None:
                try:
                    place = "file " + normalize(ref)
                except PathError:
                    continue
            elif not target.is_local and config_map is not None:
                place = f"ConfigMap {config_map.name} key {config_map.key}"
            else:
                continue
            owner = f"{type(obj).__name__} {obj.name}"
            first = claimed.setdefault((target_name, place), owner)
            if first != owner:
                yield _at(obj.origin, spec_path, f"{place} on target {target_name!r} is "
                          f"already written by {first}", "delivery-conflict")
