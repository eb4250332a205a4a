"""set_scalars changes the scalars it is asked to and not one other byte: comments, key
order, quoting, flow style, other documents of the stream."""

from __future__ import annotations

import difflib

import pytest

from reconciler.desired.edit import EditError, set_scalars
from tests.conftest import EXAMPLE

SHA = "ab" * 32
URI = ("spec", "artifact", "uri")
DIGEST = ("spec", "artifact", "sha256")


def changed(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_the_example_model_changes_in_exactly_two_lines() -> None:
    before = (EXAMPLE / "models" / "connect4.yaml").read_text()
    after = set_scalars(before, 0, {URI: "https://models.example/c4-v3.pt", DIGEST: SHA})
    assert changed(before, after) == [
        "-    uri: models/connect4-policy-v2.pt",
        "-    sha256: f5129856856f88b7d9390dd7f1885eb33b0bd5c814f142e7b6ebc0efa9f17631",
        "+    uri: 'https://models.example/c4-v3.pt'",
        f"+    sha256: {SHA}"]


@pytest.mark.parametrize(("line", "expected"), [
    ('    sha256: "old"   # pinned by CI', f'    sha256: "{SHA}"   # pinned by CI'),
    ("    sha256: 'old'", f"    sha256: '{SHA}'"),
    ("    sha256: old # c", f"    sha256: {SHA} # c"),
])
def test_quoting_and_comments_are_kept(line: str, expected: str) -> None:
    before = f"# head\nkind: Model\nspec:\n  artifact:\n    uri: m.pt\n{line}\n# tail\n"
    assert changed(before, set_scalars(before, 0, {DIGEST: SHA})) == [f"-{line}",
                                                                      f"+{expected}"]


def test_flow_mappings_and_later_documents() -> None:
    before = ("kind: Target\n---\n# the model\nkind: Model\n"
              "spec: {artifact: {uri: m.pt, sha256: old, format: file}}  # flow\n")
    after = set_scalars(before, 1, {URI: "file:///srv/m v2.pt", DIGEST: "1234"})
    assert changed(before, after) == [
        "-spec: {artifact: {uri: m.pt, sha256: old, format: file}}  # flow",
        "+spec: {artifact: {uri: 'file:///srv/m v2.pt', sha256: '1234', format: file}}  # flow"]


def test_a_missing_scalar_is_an_error_not_an_insertion() -> None:
    with pytest.raises(EditError, match="sha256 is missing"):
        set_scalars("kind: Model\nspec:\n  artifact: {uri: m.pt}\n", 0, {DIGEST: SHA})
    with pytest.raises(EditError, match="document 3 does not exist"):
        set_scalars("kind: Model\n", 3, {DIGEST: SHA})


def test_a_model_after_a_commented_out_document_is_edited() -> None:
    """A document left empty (its content commented out) keeps its place in the stream: the
    Model is document 2, as the daemon's loader numbers it, and that is the one changed."""
    before = ("kind: Target\n---\n# kind: Model\n# (retired)\n---\nkind: Model\n"
              "spec:\n  artifact:\n    uri: m.pt\n    sha256: old\n")
    after = set_scalars(before, 2, {DIGEST: SHA})
    assert changed(before, after) == ["-    sha256: old", f"+    sha256: {SHA}"]


def test_yaml_the_round_trip_parser_refuses_is_an_edit_error() -> None:
    """What ruamel's round trip cannot read (here a tab before a comment, which the daemon's
    loader accepts) is an EditError with its words, never a ScannerError out of promote."""
    with pytest.raises(EditError, match="cannot be read for a round trip"):
        set_scalars("kind: Model\nspec:\n  artifact:\n    uri: m.pt\t# c\n    sha256: old\n",
                    0, {DIGEST: SHA})


@pytest.mark.parametrize("text", [
    "pinned: &d old\nkind: Model\nspec:\n  artifact:\n    uri: m.pt\n    sha256: *d\n",
    "kind: Model\nspec:\n  artifact:\n    uri: m.pt\n    sha256: &d old\nalso: *d\n",
])
def test_an_anchored_or_aliased_scalar_is_refused_by_name(text: str) -> None:
    """ruamel places an alias at its anchor: writing there would change every use of it."""
    with pytest.raises(EditError, match=r"spec\.artifact\.sha256 is an anchor or an alias"):
        set_scalars(text, 0, {DIGEST: SHA})
