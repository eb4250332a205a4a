"""Change a few scalars of a YAML document and nothing else: comments, key order, quoting,
indentation and every other byte stay as they were.

ruamel.yaml's round-trip loader finds each scalar and where it starts; the new value is
written over the old one's characters in the same style (plain, single or double quoted).
Dumping the whole document again would reflow long lines and re-indent; a person reviewing
the pull request must see exactly the lines that change. The result is loaded again and
compared: anything but the intended values differing is an error, never a commit.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from reconciler.desired.yamlload import YamlError, load_documents

Path_ = tuple[str, ...]
# A plain scalar that reads back as the same string in block and flow context alike (no
# ':', which a flow mapping reads as a key's end, nor '#', ',', brackets or spaces).
_SAFE_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./+=~-]*")
_NOT_STRINGS = re.compile(r"(?i:true|false|yes|no|on|off|null|~|[-+]?[0-9][0-9_.eE+-]*)")


class EditError(ValueError):
    """The document does not have the scalars to change, or they cannot be changed alone."""


def _documents(text: str) -> list[Any]:
    loader = YAML(typ="rt")
    loader.preserve_quotes = True
    try:
        return list(loader.load_all(io.StringIO(text)))
    except YAMLError as error:
        said = " ".join(str(error).split())
        raise EditError(f"the file cannot be read for a round trip: {said}") from None


def _node(documents: list[Any], document: int, path: Path_) -> tuple[CommentedMap, str]:
    if document >= len(documents):
        raise EditError(f"document {document} does not exist")
    node = documents[document]
    for key in path[:-1]:
        if not isinstance(node, CommentedMap) or key not in node:
            raise EditError(f"{'.'.join(path)}: {key!r} is missing")
        node = node[key]
    if not isinstance(node, CommentedMap) or path[-1] not in node:
        raise EditError(f"{'.'.join(path)} is missing")
    if not isinstance(node[path[-1]], str):
        raise EditError(f"{'.'.join(path)} is not a string")
    if getattr(getattr(node[path[-1]], "anchor", None), "value", None):
        # ruamel places an alias at its anchor: one write would change every use of it.
        raise EditError(f"{'.'.join(path)} is an anchor or an alias: change it by hand")
    return node, path[-1]


def _extent(line: str, col: int) -> tuple[int, int, str]:
    """Where the scalar starting at ``col`` ends on its line, and its style."""
    first = line[col]
    if first in "'\"":
        index = col + 1
        while index < len(line):
            if first == "'" and line[index] == "'":
                if line[index + 1:index + 2] == "'":
                    index += 2
                    continue
                return col, index + 1, first
            if first == '"' and line[index] == "\\":
                index += 2
                continue
            if first == '"' and line[index] == '"':
                return col, index + 1, first
            index += 1
        raise EditError("a quoted scalar that spans lines cannot be edited in place")
    end = len(line)
    for stop in (" #", ",", "}", "]"):
        found = line.find(stop, col)
        if found != -1:
            end = min(end, found)
    return col, len(line[:end].rstrip()), ""


def _written(value: str, style: str) -> str:
    if style == "'" or (not style and not (_SAFE_PLAIN.fullmatch(value)
                                           and not _NOT_STRINGS.fullmatch(value))):
        return "'" + value.replace("'", "''") + "'"
    if style == '"':
        return json.dumps(value)
    return value


def set_scalars(text: str, document: int, values: Mapping[Path_, str]) -> str:
    """``text`` with the string scalars at ``values``' paths (in the ``document``-th document
    of the stream) set to the new values; nothing else changes."""
    documents = _documents(text)
    lines = text.splitlines(keepends=True)
    edits = []
    for path, value in values.items():
        parent, key = _node(documents, document, path)
        row, col = parent.lc.value(key)
        start, end, style = _extent(lines[row].rstrip("\r\n"), col)
        edits.append((row, start, end, _written(value, style)))
    for row, start, end, written in sorted(edits, reverse=True):
        lines[row] = lines[row][:start] + written + lines[row][end:]
    changed = "".join(lines)
    _check(text, changed, document, values)
    return changed


def _check(before: str, after: str, document: int, values: Mapping[Path_, str]) -> None:
    """The edit changed exactly the intended values: reload both with the loader the daemon
    uses and compare."""
    try:
        # By their place in the stream: the loader skips empty documents, ruamel does not.
        old = {d.index: d.data for d in load_documents(before.encode())}
        new = {d.index: d.data for d in load_documents(after.encode())}
    except YamlError as error:
        raise EditError(f"the edit would not parse: {error}") from None
    for path, value in values.items():
        node = old[document]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    if old != new:
        raise EditError("the edit would change more than the intended values")
