"""From a snapshot to a validated Desired state, or every error at once.

Each step that depends only on content is cached (see ``cache``): a warm pass over an
unchanged tree reads no blob, parses nothing and starts no subprocess.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from referencing.exceptions import Unresolvable

import reconciler
from reconciler.desired import schema as schemas
from reconciler.desired.cache import DesiredCache
from reconciler.desired.documents import (
    Budget,
    Config,
    Delivered,
    Desired,
    Gauntlet,
    Model,
    Origin,
    Strategy,
    Target,
    build,
)
from reconciler.desired.locate import Locator
from reconciler.desired.render import render_config
from reconciler.desired.strategy_check import check_key, check_strategies
from reconciler.desired.validate import Finding, cross_check
from reconciler.desired.yamlload import DEFAULT_LIMITS, Limits, YamlError, load_documents
from reconciler.diagnostics import Diagnostic, InvalidInput
from reconciler.source.snapshot import Entry, Snapshot, resolve

YAML_SUFFIXES = (".yaml", ".yml")
_T = TypeVar("_T")


def cache_salt(limits: Limits = DEFAULT_LIMITS) -> str:
    """Changes when anything that decides a cached result changes."""
    material = [reconciler.__version__, schemas.schema_digest(), asdict(limits)]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:16]


def _load_file(snapshot: Snapshot, entry: Entry, limits: Limits) -> dict[str, Any]:
    """Documents and located problems of one YAML file: a pure function of its content."""
    if entry.size > limits.max_file_bytes:
        return {"docs": [], "problems": [[1, 1, f"file is {entry.size} bytes, over the limit "
                                          f"of {limits.max_file_bytes}", "file-size"]]}
    data = snapshot.read(entry)
    try:
        documents = load_documents(data, limits)
    except YamlError as error:
        return {"docs": [], "problems": [[error.line, error.col, error.message, error.rule]]}
    if not documents:
        return {"docs": [], "problems": [[1, 1, "the file holds no document", "empty-file"]]}
    docs: list[list[Any]] = []
    problems: list[list[Any]] = []
    locator = Locator(data.decode("utf-8-sig"))
    for document in documents:
        violations = schemas.check_document(document.data)
        mapping = document.data if isinstance(document.data, dict) else {}
        metadata = mapping.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        kind = mapping.get("kind")
        docs.append([document.index, document.line, kind if isinstance(kind, str) else None,
                     name if isinstance(name, str) else None, not violations, document.data])
        for violation in violations:
            line, col = locator.locate(document.index, violation.path, at_key=violation.at_key)
            problems.append([line, col, violation.message, violation.rule])
    return {"docs": docs, "problems": problems}


def _config_schema_findings(config: Config, snapshot: Snapshot) -> list[Finding]:
    assert config.schema is not None
    entry = resolve(snapshot.entries(), config.schema)
    try:
        schema = json.loads(snapshot.read(entry))
    except UnicodeDecodeError:
        return [Finding(entry.path, "not UTF-8 text", "config-schema-json")]
    except json.JSONDecodeError as error:
        return [Finding(entry.path, f"not valid JSON: {error.msg}", "config-schema-json",
                        line=error.lineno, col=error.colno)]
    checker_class = validator_for(schema, default=Draft202012Validator)
    try:
        checker_class.check_schema(schema)
        violations = schemas.schema_violations(checker_class(schema), dict(config.data),
                                               prefix=("spec", "data"))
    except SchemaError as error:
        return [Finding(entry.path, f"not a valid JSON Schema: {error.message}",
                        "config-schema-invalid")]
    except Unresolvable as error:
        return [Finding(entry.path, f"a $ref cannot be resolved ({error}); schemas must be "
                        "self-contained", "config-schema-invalid")]
    return [Finding(config.origin.file, f"{v.message} (schema {config.schema})",
                    "config-schema", config.origin.document, v.path, v.at_key)
            for v in violations]


class _Located:
    """Turns findings into diagnostics, reading and round-trip parsing each file once."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._locators: dict[str, Locator] = {}

    def __call__(self, finding: Finding) -> list[Any]:
        line, col = finding.line, finding.col
        if finding.document is not None:
            locator = self._locators.get(finding.file)
            if locator is None:
                entry = self._snapshot.entries()[finding.file]
                locator = Locator(self._snapshot.read(entry).decode("utf-8-sig"))
                self._locators[finding.file] = locator
            line, col = locator.locate(finding.document, finding.path, at_key=finding.at_key)
        return [finding.file, line, col, finding.message, finding.rule]


def load_desired(snapshot: Snapshot, cache: DesiredCache, *, limits: Limits = DEFAULT_LIMITS,
                 run_strategy_checks: bool = True) -> Desired:
    """The validated desired state of ``snapshot``; InvalidInput lists every error."""
    entries = snapshot.entries()
    problems: list[list[Any]] = []
    objects: list[Any] = []
    declared: set[tuple[str, str]] = set()
    for path, entry in entries.items():
        if entry.kind != "file" or not path.endswith(YAML_SUFFIXES):
            continue
        loaded = cache.files.get(entry.oid)
        if loaded is None:
            loaded = _load_file(snapshot, entry, limits)
            cache.files[entry.oid] = loaded
            cache.mark_dirty()
        problems += [[path, *problem] for problem in loaded["problems"]]
        for index, line, kind, name, valid, data in loaded["docs"]:
            if kind is not None and name is not None:
                declared.add((kind, name))
            if valid:
                objects.append(build(kind, data, Origin(path, entry.oid, index, line)))

    locate = _Located(snapshot)
    findings = cross_check(entries, objects, declared)
    problems += [locate(finding) for finding in findings]
    # A check needs the files it names; other findings on the same document do not stop it.
    unresolved = {(f.file, f.document) for f in findings
                  if f.path[:2] in (("spec", "schema"), ("spec", "source"), ("spec", "tests"))}
    checkable = [o for o in objects if (o.origin.file, o.origin.document) not in unresolved]
    problems += _cached_checks(snapshot, cache, checkable, locate, run_strategy_checks)

    if problems:
        prefix = snapshot.display_prefix
        raise InvalidInput(Diagnostic(prefix + file, line, col, message, rule)
                                  for file, line, col, message, rule in problems)
    return _assemble(snapshot, cache, objects)


def located_warnings(snapshot: Snapshot, findings: Iterable[Finding]) -> list[Diagnostic]:
    """Findings that leave the state valid (``validate`` prints them, exit code unchanged),
    located like errors and marked as warnings."""
    locate = _Located(snapshot)
    return [Diagnostic(snapshot.display_prefix + file, line, col, f"warning: {message}", rule)
            for file, line, col, message, rule in map(locate, findings)]


def _cached_checks(snapshot: Snapshot, cache: DesiredCache, objects: Iterable[Any],
                   locate: _Located, run_strategy_checks: bool) -> list[list[Any]]:
    """Config-schema and strategy checks, each run at most once per distinct input."""
    entries = snapshot.entries()
    problems: list[list[Any]] = []
    pending: dict[str, Strategy] = {}
    for obj in objects:
        if isinstance(obj, Config) and obj.schema is not None:
            key = "config:" + hashlib.sha256(json.dumps(
                [obj.origin.oid, obj.origin.document,
                 resolve(entries, obj.schema).oid]).encode()).hexdigest()
            if key not in cache.checks:
                cache.checks[key] = [locate(f) for f in _config_schema_findings(obj, snapshot)]
                cache.mark_dirty()
            problems += cache.checks[key]
        elif isinstance(obj, Strategy) and run_strategy_checks:
            key = "strategy:" + check_key(obj, entries)
            if key in cache.checks:
                problems += cache.checks[key]
            else:
                pending[key] = obj
    outcomes = check_strategies(list(pending.values()), snapshot)
    for key, strategy in pending.items():
        cache.checks[key] = [locate(f) for f in outcomes[strategy.name]]
        cache.mark_dirty()
        problems += cache.checks[key]
    return problems


def _assemble(snapshot: Snapshot, cache: DesiredCache, objects: list[Any]) -> Desired:
    by_kind: dict[type, dict[str, Any]] = defaultdict(dict)
    for obj in objects:
        by_kind[type(obj)][obj.name] = obj
    entries = snapshot.entries()
    digests: dict[tuple[str, str], str] = {}

    def read_content(obj: Delivered) -> bytes:
        if isinstance(obj, Config):
            return render_config(obj)
        return snapshot.read(resolve(entries, obj.source))

    for obj in [*by_kind[Config].values(), *by_kind[Strategy].values()]:
        key = (f"render:{obj.origin.oid}:{obj.origin.document}" if isinstance(obj, Config)
               else "blob:" + resolve(entries, obj.source).oid)
        digest = cache.digests.get(key)
        if digest is None:
            digest = hashlib.sha256(read_content(obj)).hexdigest()
            cache.digests[key] = digest
            cache.mark_dirty()
        digests[(obj.kind, obj.name)] = digest
    return Desired(snapshot.revision, _typed(by_kind, Target), _typed(by_kind, Strategy),
                   _typed(by_kind, Config), _typed(by_kind, Model), _typed(by_kind, Gauntlet),
                   _typed(by_kind, Budget), digests, read_content,
                   lambda path: snapshot.read(resolve(entries, path)))


def _typed(by_kind: Mapping[type, dict[str, Any]], kind: type[_T]) -> dict[str, _T]:
    return dict(by_kind.get(kind, {}))
