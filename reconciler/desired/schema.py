"""JSON Schema checks of documents, with violations an operator can act on.

Schemas live in ``schemas/`` (draft 2020-12, one per kind, shared definitions in
``common.schema.json``). A subschema may carry ``x-rule`` (the rule's name in error
output) and ``x-message`` (what the value must be, in words).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from reconciler.redaction import redact_text

API_VERSION = "reconciler/v1"
KINDS = ("Target", "Strategy", "Model", "Gauntlet", "Config", "Budget")
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule a document breaks, at a JSON path inside it."""

    path: tuple[str | int, ...]
    message: str
    rule: str
    at_key: bool = False


def dotted(path: Sequence[str | int]) -> str:
    """``spec.opponents[1].minScore``: how paths read in messages."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


@functools.cache
def _schemas() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(SCHEMA_DIR.glob("*.json"))}


@functools.cache
def schema_digest() -> str:
    """Changes whenever a schema changes: part of every cache key for checked documents."""
    digest = hashlib.sha256()
    for name, schema in _schemas().items():
        digest.update(name.encode() + json.dumps(schema, sort_keys=True).encode())
    return digest.hexdigest()


@functools.cache
def _registry() -> Registry[Any]:
    resources = [(schema["$id"], Resource.from_contents(schema)) for schema in _schemas().values()]
    return Registry().with_resources(resources)


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """The validator for ``<name>.schema.json``: a kind in lower case, or ``settings``."""
    return Draft202012Validator(_schemas()[f"{name}.schema.json"], registry=_registry())


def check_document(data: Any) -> list[Violation]:
    """Envelope first (a clear word on kind and apiVersion), then the kind's schema."""
    if not isinstance(data, dict):
        shown = "a list" if isinstance(data, list) else f"a scalar ({data!r:.40})"
        return [Violation((), f"a document must be a mapping with apiVersion, kind, metadata "
                          f"and spec; this one is {shown}", "document-type")]
    violations = []
    api_version = data.get("apiVersion")
    if api_version != API_VERSION:
        message = ("missing apiVersion" if api_version is None
                   else f"apiVersion {api_version!r} is not supported")
        violations.append(Violation(("apiVersion",) if api_version is not None else (),
                                    f"{message}; use {API_VERSION}", "api-version"))
    kind = data.get("kind")
    if kind not in KINDS:
        message = "missing kind" if kind is None else f"unknown kind {kind!r}"
        violations.append(Violation(("kind",) if kind is not None else (),
                                    f"{message}; expected one of {', '.join(KINDS)}", "kind"))
        return violations
    if "metadata" in data and not data["metadata"]:
        return [*violations, Violation(("metadata",), "metadata is empty; it needs a name",
                                       "metadata")]
    # The envelope check above already said what is wrong with apiVersion.
    return violations + [v for v in schema_violations(validator(kind.lower()), data)
                         if not (violations and (v.path == ("apiVersion",)
                                                 or "'apiVersion'" in v.message))]


def schema_violations(checker: jsonschema.protocols.Validator, instance: Any,
                      prefix: tuple[str | int, ...] = ()) -> list[Violation]:
    """Every error of ``checker`` on ``instance``, as violations under ``prefix``."""
    found: list[Violation] = []
    for error in checker.iter_errors(instance):
        found.extend(_explain(error, prefix))
    return found


def _explain(error: ValidationError, prefix: tuple[str | int, ...]) -> Iterator[Violation]:
    path = prefix + tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    keyword = str(error.validator)
    where = dotted(path)
    lead = f"{where}: " if where else ""
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        known = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        for key in error.instance:
            if key in known or any(re.search(pattern, key) for pattern in patterns):
                continue
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else (
                f"; known fields: {', '.join(known)}" if known else "")
            yield Violation((*path, key), f"{dotted((*path, key))}: unknown field {key!r}"
                            f"{suggestion}", "unknown-field", at_key=True)
        return
    if keyword == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        name = missing[0] if missing else error.message
        yield Violation(path, f"{lead}missing required field {name!r}", "required-field")
        return
    custom = schema.get("x-message")
    rule = str(schema.get("x-rule") or keyword)
    if keyword == "type" and not custom:
        expected = error.validator_value
        shown = " or ".join(expected) if isinstance(expected, list) else str(expected)
        message = f"expected {_article(shown)}, got {_describe(error.instance)}"
    elif keyword in ("enum", "const"):
        value: Any = error.validator_value
        allowed = value if keyword == "enum" else [value]
        message = (f"{_describe(error.instance)} is not allowed; use "
                   f"{' or '.join(repr(v) for v in allowed)}")
    elif keyword == "dependentRequired":
        pair = re.match(r"'(.+)' is a dependency of '(.+)'", error.message)
        message = f"{pair[2]!r} needs {pair[1]!r}" if pair else error.message
    elif custom:
        message = f"{_describe(error.instance)} {custom}" if keyword != "oneOf" else custom
    else:
        message = error.message
    yield Violation(path, lead + message, rule)


def _article(type_name: str) -> str:
    return ("an " if type_name[:1] in "aeiou" else "a ") + type_name


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value}"
    text = redact_text(str(value))  # a URL's credentials are never echoed back
    return repr(text if len(text) <= 72 else text[:69] + "...")
