"""Precise, sortable error reports: ``path:line:col: message [rule]``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    """One problem in the desired state. Lines and columns are 1-based."""

    path: str
    line: int
    col: int
    message: str
    rule: str

    def format(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message} [{self.rule}]"

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "message": self.message,
            "rule": self.rule,
        }


    def error_json(self) -> dict[str, object]:
        """As ``validate --output json`` and ``POST /plan`` show it."""
        return {"file": self.path, "line": self.line, "column": self.col, "rule": self.rule,
                "message": self.message}


class InvalidInput(Exception):
    """Desired state or settings with errors: nothing may reach the fleet."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = sorted(set(diagnostics))
        super().__init__("\n".join(d.format() for d in self.diagnostics))
