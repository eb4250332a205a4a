"""The layers of DESIGN.md §5, as a test: no module imports upward, and the adapters do not
import each other (they meet through protocols defined below them: places.ContentStore,
places.Place and places.Fleet, gauntlet.runner.VerdictMemory and JobLauncher).

The drawing in docs/architecture.md cannot rot while this passes. Lazy imports inside
functions and ``TYPE_CHECKING`` imports count: they are dependencies all the same.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "reconciler"

# Top to bottom. A module may import its own layer and any layer below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "daemon", "__main__", "helptext"),
    ("app", "passes", "prcheck", "costs", "promote", "feedback"),
    ("execute",),
    ("local", "kube", "gauntlet", "artifacts", "journal", "store", "forge", "notify",
     "analysis"),
    ("places",),
    ("settings",),
    ("plan",),
    ("desired",),
    ("source",),
    # Leaves any layer may use: how untrusted programs run (the sandbox and the plain
    # bounded runner), HTTP probes, digests, the error tree and the vocabulary, URL
    # redaction, logging, HTTP connections (direct or through the environment's proxy) and
    # one bounded exchange over them (forge APIs and notification receivers).
    ("sandbox", "coderun", "errors", "vocabulary", "durations", "diagnostics", "processes",
     "probes", "digests", "redaction", "events", "logs", "http_connections", "bounded_http",
     "output", "progress", "completion", ""),
)
# Adapters: siblings that must not import each other.
INDEPENDENT = frozenset(LAYERS[3])
# A program of its own, run as a subprocess or a Job's entry point, never imported by the
# daemon: it may use sibling adapters to fetch and verify what it plays.
PROGRAMS = frozenset({"gauntlet.worker"})
# Within the top layer the command line may start the daemon; never the other way round.
TOP_ORDER = {"cli": 0, "__main__": 0, "helptext": 0, "daemon": 1}


def _unit(module: str) -> str:
    """The layer unit of a dotted module name below ``reconciler``: its first part."""
    return module.split(".")[0]


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"module unit {unit!r} is in no layer: add it to LAYERS")


def _imports(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[:-node.level]
                name = ".".join(["reconciler", *base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name == "reconciler":  # from reconciler import app
                found |= {f"reconciler.{alias.name}" for alias in node.names}
            else:
                found.add(name)
    return {name[len("reconciler."):] if name != "reconciler" else ""
            for name in found if name == "reconciler" or name.startswith("reconciler.")}


def violations(package: Path) -> list[str]:
    """Every import that breaks the layers, as 'importer -> imported: why'."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).with_suffix("").as_posix().replace("/", ".")
        module = relative.removesuffix(".__init__")
        unit = _unit(module)
        for imported in _imports(path, module):
            other = _unit(imported)
            if other == unit or (other and not (package / other).exists()
                                 and not (package / f"{other}.py").exists()):
                continue  # same unit, or a package attribute (``__version__``)
            mine, theirs = _layer(unit), _layer(other)
            if theirs < mine:
                problems.append(f"{module} -> {imported}: imports upward "
                                f"({unit} is below {other})")
            elif mine == theirs == 0 and TOP_ORDER[other] < TOP_ORDER[unit]:
                problems.append(f"{module} -> {imported}: the daemon never imports the CLI")
            elif unit in INDEPENDENT and other in INDEPENDENT and module not in PROGRAMS:
                problems.append(f"{module} -> {imported}: adapters meet through protocols "
                                "defined below them, not by importing each other")
    return problems


def test_no_module_imports_upward_and_adapters_stay_independent() -> None:
    assert violations(PACKAGE) == []


def test_the_contract_catches_a_planted_upward_import(tmp_path: Path) -> None:
    copy = tmp_path / "reconciler"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    planner = copy / "plan" / "planner.py"
    planner.write_text(planner.read_text() + "\n\ndef _late() -> None:\n"
                       "    from reconciler.execute.executor import Executor  # noqa\n")
    assert violations(copy) == [
        "plan.planner -> execute.executor: imports upward (plan is below execute)"]


def test_the_contract_catches_adapters_importing_each_other(tmp_path: Path) -> None:
    copy = tmp_path / "reconciler"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    place = copy / "local" / "place.py"
    place.write_text(place.read_text() + "\nfrom reconciler.store import Store  # noqa\n")
    found = violations(copy)
    assert found == ["local.place -> store: adapters meet through protocols defined below "
                     "them, not by importing each other"]


def test_the_drawing_in_architecture_md_names_every_layer_unit() -> None:
    """The drawing is what a newcomer reads first; a package added to LAYERS must be drawn."""
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    drawing = text.split("```\n")[1]
    missing = [unit for layer in LAYERS for unit in layer
               if unit not in ("", "__main__") and not re.search(rf"\b{unit}\b", drawing)]
    assert not missing, f"docs/architecture.md's drawing lacks {missing}"
