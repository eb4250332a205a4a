"""The bounded loader: YAML 1.2 core scalars, and limits that hostile input cannot pass."""

from __future__ import annotations

import time

import pytest

from reconciler.desired.yamlload import DEFAULT_LIMITS, Limits, YamlError, load_documents


def load(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> list[object]:
    data = text.encode() if isinstance(text, str) else text
    return [document.data for document in load_documents(data, limits)]


def error(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> YamlError:
    with pytest.raises(YamlError) as raised:
        load(text, limits)
    return raised.value


def test_core_schema_scalars_and_strings_that_look_like_other_things() -> None:
    [data] = load("a: 12\nb: -3\nc: 1.5e3\nd: 0o17\ne: 0x1F\nf: true\ng: False\nh: ~\ni: null\n"
                  "j: '12'\nk: yes\nl: 2024-01-01\nm: !!str 7\nn: 1_000\no: \"true\"\np:\n")
    assert data == {"a": 12, "b": -3, "c": 1500.0, "d": 15, "e": 31, "f": True, "g": False,
                    "h": None, "i": None, "j": "12", "k": "yes", "l": "2024-01-01", "m": "7",
                    "n": "1_000", "o": "true", "p": None}


def test_block_scalars_flow_collections_and_merge_keys() -> None:
    [data] = load("base: &base {x: 1, y: 2}\nd:\n  <<: *base\n  y: 3\ntext: |\n  two\n  lines\n"
                  "list: [1, [2, 3]]\n")
    assert data == {"base": {"x": 1, "y": 2}, "d": {"y": 3, "x": 1}, "text": "two\nlines\n",
                    "list": [1, [2, 3]]}


def test_documents_keep_their_stream_index_and_first_line() -> None:
    documents = load_documents(b"# head\n---\na: 1\n---\n---\nb: 2\n")
    assert [(d.index, d.line, d.data) for d in documents] == [(0, 2, {"a": 1}), (2, 5, {"b": 2})]


def test_duplicate_key_names_both_lines() -> None:
    found = error("a: 1\nb:\n  c: 2\n  c: 3\n")
    assert (found.line, found.col, found.rule) == (4, 3, "yaml-duplicate-key")
    assert "first at line 3" in found.message


@pytest.mark.parametrize("text", ["a:\n\tb: 1\n", "a: 1\n\tb: 2\n"])
def test_tabs_in_indentation_are_named_as_such(text: str) -> None:
    found = error(text)
    assert (found.line, found.rule) == (2, "yaml-tab")


def test_syntax_error_points_at_the_problem_and_its_context() -> None:
    found = error("a: [1, 2\nb: 3\n")
    assert (found.line, found.rule) == (2, "yaml-syntax")
    assert "flow sequence started at line 1" in found.message


def test_alias_bomb_is_stopped_early_and_cheaply() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        name, previous = chr(97 + level), chr(96 + level)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    started = time.perf_counter()
    found = error("\n".join(lines) + "\n")
    assert found.rule == "yaml-alias-expansion"
    assert time.perf_counter() - started < 5  # generous: the point is it does not explode


def test_aliases_within_the_limit_are_fine_and_count_their_expansion() -> None:
    text = "a: &a [1, 2, 3]\nb: [*a, *a]\n"
    assert load(text) == [{"a": [1, 2, 3], "b": [[1, 2, 3], [1, 2, 3]]}]
    assert error(text, Limits(max_nodes=10)).rule == "yaml-alias-expansion"


def test_deep_nesting_is_refused_without_crashing_the_process() -> None:
    # ruamel's C loader segfaults on this input; the event builder must not.
    found = error("[" * 100_000 + "]" * 100_000)
    assert (found.line, found.col, found.rule) == (1, 65, "yaml-depth")


def test_aliases_cannot_smuggle_depth_past_the_limit() -> None:
    deep = "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    assert error(deep).rule == "yaml-depth"


def test_size_limit_is_checked_before_parsing() -> None:
    found = error(b"a: " + b"x" * 2000, Limits(max_file_bytes=1000))
    assert (found.line, found.rule) == (1, "file-size")


@pytest.mark.parametrize(("data", "line", "col", "rule"), [
    (b"a: 1\nb: caf\xe9\n", 2, 7, "file-encoding"),
    (b"a: 1\nb: \x00\x01", 2, 4, "file-encoding"),
    (b"a: \x07\n", 1, 4, "file-encoding"),
])
def test_binary_and_invalid_text_is_named_with_its_position(data: bytes, line: int, col: int,
                                                            rule: str) -> None:
    found = error(data)
    assert (found.line, found.col, found.rule) == (line, col, rule)


def test_utf8_byte_order_mark_is_accepted() -> None:
    assert load("\ufeffa: 1\n") == [{"a": 1}]


@pytest.mark.parametrize("text", ["a: !!python/object/apply:os.system [ls]\n",
                                  "a: !custom x\n", "a: !!binary aGk=\n", "a: !!set {x}\n"])
def test_tags_that_would_build_objects_are_refused(text: str) -> None:
    assert error(text).rule == "yaml-scalar"


@pytest.mark.parametrize("text", ["1: a\n", "true: a\n", "? [a]\n: b\n", "~: x\n"])
def test_mapping_keys_must_be_strings(text: str) -> None:
    assert error(text).rule == "yaml-key-type"


@pytest.mark.parametrize("text", ["a: .inf\n", "a: -.Inf\n", "a: .nan\n"])
def test_non_finite_numbers_are_refused(text: str) -> None:
    assert error(text).rule == "yaml-scalar"


def test_explicit_tags_check_their_value() -> None:
    assert load("a: !!int '7'\nb: !!float 2\n") == [{"a": 7, "b": 2.0}]
    assert error("a: !!int seven\n").rule == "yaml-scalar"


def test_undefined_alias_is_named() -> None:
    assert error("a: *nowhere\n").rule in ("yaml-alias", "yaml-syntax")


def test_document_count_is_bounded() -> None:
    assert error("---\na: 1\n" * 5, Limits(max_documents=3)).rule == "yaml-documents"
