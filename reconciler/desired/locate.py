"""Map a JSON path inside a document back to its line and column.

Only used when something is wrong: the round-trip loader is slow, so valid files never
pay for positions. Files reach here only after the bounded loader accepted them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq


class Locator:
    """Positions in one file's text; the round-trip parse happens once, on first use."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._documents: list[Any] | None = None

    def locate(self, document_index: int, path: Sequence[str | int], *,
               at_key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of ``path`` in document ``document_index``.

        ``at_key`` points at a mapping key rather than its value (an unknown field). Where
        the path leaves the document early, the deepest node on it is named.
        """
        if self._documents is None:
            self._documents = list(YAML(typ="rt").load_all(self._text))
        documents = self._documents
        node = documents[document_index] if document_index < len(documents) else None
        if not isinstance(node, CommentedMap | CommentedSeq):
            return 1, 1
        line, col = node.lc.line, node.lc.col
        for position, step in enumerate(path):
            last = position == len(path) - 1
            if isinstance(node, CommentedMap) and step in node:
                line, col = node.lc.key(step) if (last and at_key) else node.lc.value(step)
                node = node[step]
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and step < len(node):
                line, col = node.lc.item(step)
                node = node[step]
            else:
                break
        return line + 1, col + 1
