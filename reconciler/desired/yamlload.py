"""Bounded YAML loading into the JSON data model.

ruamel.yaml's C parser yields events; this module builds dicts, lists and scalars from
them in a loop. Three reasons not to use the C *loader*:

- its composer recurses in C: about 100,000 nested brackets crash the process;
- aliases are expanded by reference, so a "billion laughs" file loads instantly and then
  explodes in whatever walks it (schema validation, rendering);
- its Python constructor is most of its cost: building from events is several times faster.

So depth, nodes after alias expansion and documents per file are bounded here, duplicate
keys are errors, and scalars resolve as in the YAML 1.2 core schema. Documents are JSON
data: mapping keys must be strings, timestamps stay strings, numbers must be finite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from ruamel.yaml.reader import ReaderError


@dataclass(frozen=True, slots=True)
class Limits:
    """What one file may cost. The defaults are far above any real desired state."""

    max_file_bytes: int = 1 << 20
    max_depth: int = 64
    max_nodes: int = 100_000
    max_documents: int = 1_000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """One document of a file: its position in the stream, its first line (1-based), data."""

    index: int
    line: int
    data: Any


class YamlError(Exception):
    """A file that cannot be loaded, with the position and the rule it breaks."""

    def __init__(self, line: int, col: int, message: str, rule: str) -> None:
        super().__init__(f"{line}:{col}: {message} [{rule}]")
        self.line = line
        self.col = col
        self.message = message
        self.rule = rule


_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_OCT = re.compile(r"0o[0-7]+\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_NON_FINITE = re.compile(r"[-+]?\.(?:inf|Inf|INF)\Z|\.(?:nan|NaN|NAN)\Z")
_NUMERIC_START = frozenset("0123456789+-.")

_TAG_PREFIX = "tag:yaml.org,2002:"
_MERGE_KEY = "<<"


def _resolve_plain(value: str) -> Any:
    if value in _NULLS:
        return None
    boolean = _BOOLS.get(value)
    if boolean is not None:
        return boolean
    if value[0] in _NUMERIC_START:
        if _INT.match(value):
            return int(value)
        if _FLOAT.match(value):
            return float(value)
        if _OCT.match(value):
            return int(value[2:], 8)
        if _HEX.match(value):
            return int(value[2:], 16)
        if _NON_FINITE.match(value):
            raise ValueError(f"{value} is not a finite number; JSON data cannot hold it")
    return value


def _resolve_tagged(tag: str, value: str) -> Any:
    if tag == "!" or tag == _TAG_PREFIX + "str":
        return value
    kind = tag[len(_TAG_PREFIX) :] if tag.startswith(_TAG_PREFIX) else None
    if kind in ("int", "float", "bool", "null"):
        resolved: Any = _resolve_plain(value) if value else None
        valid = {"int": isinstance(resolved, int) and not isinstance(resolved, bool),
                 "float": isinstance(resolved, int | float) and not isinstance(resolved, bool),
                 "bool": isinstance(resolved, bool), "null": resolved is None}[kind]
        if not valid:
            raise ValueError(f"{value!r} is not a valid !!{kind}")
        return float(resolved) if kind == "float" else resolved
    raise ValueError(f"tag {tag} is not allowed: documents hold plain data")


@dataclass(slots=True)
class _Frame:
    container: dict[str, Any] | list[Any]
    anchor: str | None
    first_node: int
    height: int = 1
    key: Any = None
    has_key: bool = False
    merges: list[dict[str, Any]] = field(default_factory=list)
    key_lines: dict[str, int] = field(default_factory=dict)


def _decode(data: bytes) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _byte_position(data, nul)
        raise YamlError(line, col, "binary content (a NUL byte): not a YAML text file",
                        "file-encoding")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line, col = _byte_position(data, error.start)
        raise YamlError(
            line, col,
            f"invalid UTF-8 (byte 0x{data[error.start]:02x}); documents must be UTF-8 text",
            "file-encoding",
        ) from None


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _syntax_error(error: MarkedYAMLError, text: str) -> YamlError:
    mark = error.problem_mark or error.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    at_tab = mark is not None and text[mark.index : mark.index + 1] == "\t"
    problem = (error.problem or "invalid YAML").strip()
    if error.context:
        context = error.context
        if error.context_mark is not None and error.context_mark is not mark:
            context += f" started at line {error.context_mark.line + 1}"
        problem = f"{problem} ({context})"
    if at_tab or "tab" in problem:
        return YamlError(line, col, "a tab character in indentation; YAML indents with spaces",
                         "yaml-tab")
    return YamlError(line, col, problem, "yaml-syntax")


def load_documents(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[YamlDocument]:
    """All non-empty documents of ``data``, or YamlError at the first problem."""
    if len(data) > limits.max_file_bytes:
        raise YamlError(1, 1, f"file is {len(data)} bytes, over the limit of "
                        f"{limits.max_file_bytes}", "file-size")
    text = _decode(data)
    try:
        return _build(CParser(text), limits)
    except MarkedYAMLError as error:
        raise _syntax_error(error, text) from None
    except ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        col = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        raise YamlError(line, col, f"control character U+{error.character:04X} is not allowed",
                        "file-encoding") from None


def _build(parser: Any, limits: Limits) -> list[YamlDocument]:
    documents: list[YamlDocument] = []
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int, int]] = {}
    nodes = 0
    document_line = 1
    document_index = -1
    root: Any = None

    def fail(event: Any, message: str, rule: str) -> YamlError:
        return YamlError(event.start_mark.line + 1, event.start_mark.column + 1, message, rule)

    def add(value: Any, height: int, event: Any) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        frame = stack[-1]
        frame.height = max(frame.height, height + 1)
        container = frame.container
        if isinstance(container, list):
            container.append(value)
        elif not frame.has_key:
            if not isinstance(value, str):
                shown = type(value).__name__ if isinstance(value, dict | list) else repr(value)
                raise fail(event, f"mapping key {shown} is not a string; quote it",
                           "yaml-key-type")
            if value in container:
                first = frame.key_lines.get(value)
                raise fail(event, f"duplicate key {value!r} (first at line {first})",
                           "yaml-duplicate-key")
            frame.key, frame.has_key = value, True
            frame.key_lines[value] = event.start_mark.line + 1
        else:
            if frame.key is _MERGE:
                merged = value if isinstance(value, list) else [value]
                if not all(isinstance(item, dict) for item in merged):
                    raise fail(event, "merge key '<<' takes a mapping or a list of mappings",
                               "yaml-merge")
                frame.merges.extend(merged)
            else:
                container[frame.key] = value
            frame.has_key = False

    while True:
        event = parser.get_event()
        kind = type(event)
        if kind is ScalarEvent:
            nodes += 1
            frame = stack[-1] if stack else None
            if (frame is not None and isinstance(frame.container, dict) and not frame.has_key
                    and event.value == _MERGE_KEY and event.style in ("", None)
                    and event.tag is None):
                frame.key, frame.has_key = _MERGE, True
                continue
            try:
                if event.tag is not None:
                    value = _resolve_tagged(event.tag, event.value)
                elif event.style:
                    value = event.value
                else:
                    value = _resolve_plain(event.value)
            except ValueError as error:
                raise fail(event, str(error), "yaml-scalar") from None
            if event.anchor is not None:
                anchors[event.anchor] = (value, 1, 0)
            add(value, 0, event)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            nodes += 1
            if len(stack) >= limits.max_depth:
                raise fail(event, f"nesting deeper than {limits.max_depth} levels", "yaml-depth")
            if event.tag is not None and event.tag not in (_TAG_PREFIX + "map",
                                                           _TAG_PREFIX + "seq"):
                raise fail(event, f"tag {event.tag} is not allowed: documents hold plain data",
                           "yaml-scalar")
            container: dict[str, Any] | list[Any] = {} if kind is MappingStartEvent else []
            stack.append(_Frame(container, event.anchor, nodes))
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            frame = stack.pop()
            if isinstance(frame.container, dict):
                for merged in frame.merges:
                    for key, value in merged.items():
                        frame.container.setdefault(key, value)
            if frame.anchor is not None:
                anchors[frame.anchor] = (frame.container, nodes - frame.first_node + 1,
                                         frame.height)
            add(frame.container, frame.height, event)
        elif kind is AliasEvent:
            if event.anchor not in anchors:
                raise fail(event, f"alias *{event.anchor} names no anchor defined before it",
                           "yaml-alias")
            value, size, height = anchors[event.anchor]
            nodes += size
            if len(stack) + height > limits.max_depth:
                raise fail(event, f"alias *{event.anchor} nests deeper than "
                           f"{limits.max_depth} levels", "yaml-depth")
            add(value, height, event)
        elif kind is DocumentStartEvent:
            anchors.clear()
            root = None
            document_index += 1
            document_line = event.start_mark.line + 1
        elif kind is DocumentEndEvent:
            if root is not None:
                if len(documents) >= limits.max_documents:
                    raise fail(event, f"more than {limits.max_documents} documents in one file",
                               "yaml-documents")
                documents.append(YamlDocument(document_index, document_line, root))
        elif kind is StreamEndEvent:
            return documents
        if nodes > limits.max_nodes:
            raise fail(event, f"more than {limits.max_nodes} nodes after alias expansion "
                       "(an alias bomb?)", "yaml-alias-expansion")


class _MergeMarker:
    """Stands in for the '<<' key while its value is read."""


_MERGE: Any = _MergeMarker()
