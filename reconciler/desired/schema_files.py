"""The schemas as files a user's repository can keep: for editors (yaml-language-server
modelines), for CI (Ajv, check-jsonschema) and for review.

They are copied byte for byte: each keeps its ``$id`` (https://reconciler.dev/schemas/v1/
...), so references between them resolve the same wherever the folder lies, and a copy
can be compared with the installed version by content. ``ajv-keywords.cjs`` declares our
own keywords (``x-rule``, ``x-message``, ``patternErrorMessage``) to Ajv in strict mode.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from reconciler.desired.schema import SCHEMA_DIR

SUFFIX = ".schema.json"
AJV_KEYWORDS = "ajv-keywords.cjs"


def names() -> list[str]:
    """``budget``, ``common``, ``document``, ..., ``target``: what ``text_of`` accepts."""
    return sorted(path.name.removesuffix(SUFFIX) for path in SCHEMA_DIR.glob(f"*{SUFFIX}"))


def text_of(name: str) -> str:
    """The schema named ``name`` (a kind in any case, ``document`` or ``settings``)."""
    key = name.lower().removesuffix(SUFFIX)
    if key not in names():
        raise KeyError(name)
    return (SCHEMA_DIR / f"{key}{SUFFIX}").read_text()


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: an editor or CI never reads half a schema."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_all(folder: Path) -> list[Path]:
    """Every schema and the Ajv keyword module into ``folder`` (created); the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in [*(f"{n}{SUFFIX}" for n in names()), AJV_KEYWORDS]:
        _write(folder / name, (SCHEMA_DIR / name).read_bytes())
        written.append(folder / name)
    return written


def listing(written: list[Path]) -> list[tuple[str, str, Path | None]]:
    """(name, ``$id``, where it was written or None) for every schema."""
    where = {path.name: path for path in written}
    rows = []
    for name in names():
        schema_id = json.loads(text_of(name))["$id"]
        rows.append((name, schema_id, where.get(f"{name}{SUFFIX}")))
    return rows
