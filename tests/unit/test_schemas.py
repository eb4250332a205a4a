"""The schemas themselves: valid 2020-12 schemas with ids, strict, and readable errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reconciler.desired.schema import KINDS, SCHEMA_DIR, check_document, schema_digest
from reconciler.desired.yamlload import load_documents
from tests.conftest import EXAMPLE, REPO_ROOT


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_schema_is_a_valid_2020_12_schema_with_an_id(path: Path) -> None:
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/" + path.name)


def test_there_is_one_schema_per_kind_and_one_for_settings() -> None:
    names = {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    assert names >= {f"{kind.lower()}.schema.json" for kind in KINDS} | {"settings.schema.json"}
    assert (REPO_ROOT / "schemas").resolve() == SCHEMA_DIR.resolve()  # one copy, packaged


def test_every_example_document_is_valid_and_carries_a_modeline() -> None:
    files = sorted(EXAMPLE.rglob("*.yaml"))
    assert len(files) >= 6
    kinds = set()
    for path in files:
        text = path.read_text()
        assert text.startswith("# yaml-language-server: $schema="), path
        for document in load_documents(path.read_bytes()):
            assert check_document(document.data) == [], path
            kinds.add(document.data["kind"])
    assert kinds == set(KINDS)


def _target(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "reconciler/v1", "kind": "Target", "metadata": {"name": "t"},
            "spec": spec}


@pytest.mark.parametrize(("document", "rule", "path"), [
    (_target(local={"root": "x"}, after="s", soak="30 minutes"), "duration", ("spec", "soak")),
    (_target(local={"root": "x"}, after="s", soak="1m30"), "duration", ("spec", "soak")),
    (_target(local={"root": "x"}, soke="3m"), "unknown-field", ("spec", "soke")),
    (_target(), "target-kind", ("spec",)),
    (_target(local={"root": "x"}, kubernetes={"namespace": "n"}), "target-kind", ("spec",)),
    (_target(local={"root": "x"}, window={"timeZone": "UTC", "start": "25:00", "end": "03:00"}),
     "clock-time", ("spec", "window", "start")),
    ({**_target(local={"root": "x"}), "metadata": {"name": "-bad"}}, "dns-label",
     ("metadata", "name")),
    ({**_target(local={"root": "x"}), "metadata": {"name": "a" * 64}}, "dns-label",
     ("metadata", "name")),
    ({**_target(local={"root": "x"}), "status": {}}, "unknown-field", ("status",)),
])
def test_target_rules(document: dict[str, Any], rule: str, path: tuple[str, ...]) -> None:
    violations = check_document(document)
    assert [(v.rule, v.path) for v in violations] == [(rule, path)]


def test_unknown_field_suggests_the_closest_known_one() -> None:
    [violation] = check_document(_target(local={"root": "x"}, prun=True))
    assert "did you mean 'prune'?" in violation.message
    assert violation.at_key


@pytest.mark.parametrize("value", [1.0001, -0.1, "high"])
def test_scores_lie_in_zero_one(value: object) -> None:
    document = {"apiVersion": "reconciler/v1", "kind": "Gauntlet", "metadata": {"name": "g"},
                "spec": {"match": {"game": "connect4",
                                   "opponents": [{"name": "random", "minScore": value}]}}}
    [violation] = check_document(document)
    assert violation.rule == "score"
    assert violation.path == ("spec", "match", "opponents", 0, "minScore")


@pytest.mark.parametrize("digest", ["ab" * 31, "AB" * 32, "g" * 64, "ab" * 33])
def test_digests_are_64_lowercase_hex(digest: str) -> None:
    document = {"apiVersion": "reconciler/v1", "kind": "Model", "metadata": {"name": "m"},
                "spec": {"targets": ["t"], "artifact": {"uri": "m.pt", "sha256": digest},
                         "pointer": {"path": "p"}}}
    assert [v.rule for v in check_document(document)] == ["sha256"]


def test_envelope_errors_come_first_and_clearly() -> None:
    missing_version = check_document({"kind": "Target"})
    assert [v.rule for v in missing_version] == ["api-version", "required-field",
                                                 "required-field"]
    assert "missing required field 'metadata'" in missing_version[1].message
    assert [v.rule for v in check_document({"apiVersion": "reconciler/v1"})] == ["kind"]
    wrong = check_document({"apiVersion": "v1", "kind": "ConfigMap"})
    assert [v.rule for v in wrong] == ["api-version", "kind"]
    assert [v.rule for v in check_document([1, 2])] == ["document-type"]


def test_a_cache_written_under_other_rules_is_ignored(tmp_path: Path) -> None:
    from reconciler.desired.cache import DesiredCache
    from reconciler.desired.loader import cache_salt

    assert schema_digest() in json.dumps([schema_digest()])  # a hex digest, part of the salt
    path = tmp_path / "cache.json"
    written = DesiredCache(cache_salt(), path)
    written.files["oid"] = {"docs": [], "problems": []}
    written.mark_dirty()
    written.save()
    assert DesiredCache(cache_salt(), path).files == {"oid": {"docs": [], "problems": []}}
    assert DesiredCache("older-schemas", path).files == {}


def _subschemas(node: Any) -> list[dict[str, Any]]:
    """Every schema object inside ``node`` (and ``node`` itself when it is one)."""
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _subschemas(value)
    elif isinstance(node, list):
        for value in node:
            found += _subschemas(value)
    return found


ALL_SCHEMAS = sorted(SCHEMA_DIR.glob("*.schema.json"))


@pytest.mark.parametrize("path", ALL_SCHEMAS, ids=lambda p: p.name)
def test_every_pattern_says_in_words_what_it_wants_for_editors(path: Path) -> None:
    for node in _subschemas(json.loads(path.read_text())):
        if isinstance(node.get("pattern"), str):
            assert node.get("patternErrorMessage", "")[:1].isupper(), node["pattern"]


@pytest.mark.parametrize("path", ALL_SCHEMAS, ids=lambda p: p.name)
def test_every_required_field_is_declared_beside_it(path: Path) -> None:
    """Ajv's strictRequired, here too so the fast loop catches it."""
    for node in _subschemas(json.loads(path.read_text())):
        if isinstance(node.get("required"), list):
            assert set(node["required"]) <= set(node.get("properties", {})), node


def test_ajv_knows_every_keyword_of_ours() -> None:
    declared = (SCHEMA_DIR / "ajv-keywords.cjs").read_text()
    ours = {key for path in ALL_SCHEMAS for node in _subschemas(json.loads(path.read_text()))
            for key in node if key.startswith("x-") or key == "patternErrorMessage"}
    assert ours == {"x-rule", "x-message", "patternErrorMessage"}
    assert all(f'"{key}"' in declared for key in ours)


def test_the_document_schema_dispatches_on_kind() -> None:
    from reconciler.desired.schema import validator

    document = validator("document")
    for path in sorted(EXAMPLE.rglob("*.yaml")):
        for loaded in load_documents(path.read_bytes()):
            assert list(document.iter_errors(loaded.data)) == [], path
    target = _target(local={"root": "x"})
    assert document.is_valid(target)
    assert not document.is_valid({**target, "kind": "Model"})  # a Model needs a Model's spec
    assert not document.is_valid({**target, "kind": "ConfigMap"})
    refs = {branch["then"]["$ref"] for branch in
            json.loads((SCHEMA_DIR / "document.schema.json").read_text())["allOf"]}
    assert refs == {f"{kind.lower()}.schema.json" for kind in KINDS}
