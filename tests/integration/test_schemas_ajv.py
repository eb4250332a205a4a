"""The schemas as other tools see them: Ajv (what editors and most CI linters build on) in
strict mode, on the folder ``reconciler schema --output-dir`` writes for a user's repository.

Ajv comes from npm (``ajv-cli`` and ``ajv-formats``, pinned), installed once into the
repository's ignored ``.cache/ajv``; scripts/host-tools.sh provides node and npm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.schema import SCHEMA_DIR
from reconciler.desired.yamlload import load_documents
from tests.conftest import EXAMPLE, REPO_ROOT, Result

AJV_PACKAGES = ("ajv-cli@5.0.0", "ajv-formats@3.0.1")
AJV_HOME = REPO_ROOT / ".cache" / "ajv"


@pytest.fixture(scope="session")
def ajv() -> Path:
    """The ``ajv`` program, installed on first use (npm, then a rename: whole or absent)."""
    program = AJV_HOME / "node_modules" / ".bin" / "ajv"
    if not program.exists():
        npm = shutil.which("npm")
        assert npm is not None, "npm is missing: run scripts/host-tools.sh"
        staging = AJV_HOME.with_name(f"ajv.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        done = subprocess.run([npm, "install", "--prefix", str(staging), "--no-audit",
                               "--no-fund", "--no-package-lock", *AJV_PACKAGES],
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:  # no half install left in .cache under another pid's name
            shutil.rmtree(staging, ignore_errors=True)
        assert done.returncode == 0, done.stderr[-2000:]
        try:
            staging.rename(AJV_HOME)
        except OSError:  # another run installed it meanwhile
            shutil.rmtree(staging)
    return program


def _ajv(program: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(program), *args, "--spec=draft2020", "--strict=true",
                           "-c", "ajv-formats", "-c", "./ajv-keywords.cjs"], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def _references(folder: Path, but: str) -> list[str]:
    return [arg for path in sorted(folder.glob("*.schema.json")) if path.name != but
            for arg in ("-r", path.name)]


@pytest.fixture
def written(cli: Callable[..., Result], tmp_path: Path) -> Path:
    folder = tmp_path / "schemas"
    done = cli("schema", "--output-dir", str(folder))
    assert done.returncode == 0, done.stderr
    return folder


def test_schema_writes_every_schema_unchanged_with_stable_ids(
        cli: Callable[..., Result], written: Path) -> None:
    installed = sorted(p.name for p in SCHEMA_DIR.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in written.iterdir()) == installed
    for path in written.iterdir():
        assert path.read_bytes() == (SCHEMA_DIR / path.name).read_bytes(), path.name
    listing = json.loads(cli("schema", "-o", "json").stdout)
    assert {row["name"]: row["id"] for row in listing}["document"] == \
        "https://reconciler.dev/schemas/v1/document.schema.json"
    assert cli("schema", "Target").stdout == (SCHEMA_DIR / "target.schema.json").read_text()
    unknown = cli("schema", "ConfigMap")
    assert unknown.returncode == 1 and "known: budget, common" in unknown.stderr


def test_every_schema_compiles_in_ajv_strict_mode(ajv: Path, written: Path) -> None:
    for path in sorted(written.glob("*.schema.json")):
        done = _ajv(ajv, "compile", "-s", path.name, *_references(written, path.name),
                    cwd=written)
        assert done.returncode == 0, f"{path.name}: {done.stdout}{done.stderr}"
        assert "is valid" in done.stdout + done.stderr


def test_ajv_accepts_every_example_and_rejects_a_broken_one(ajv: Path, written: Path,
                                                            tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    kinds: dict[str, list[str]] = {}
    for path in sorted(EXAMPLE.rglob("*.yaml")):
        for index, document in enumerate(load_documents(path.read_bytes())):
            stem = path.relative_to(EXAMPLE).with_suffix("").as_posix().replace("/", "-")
            name = f"{stem}-{index}.json"
            (data / name).write_text(json.dumps(document.data))
            kinds.setdefault(document.data["kind"].lower(), []).append(name)
    settings = load_documents((REPO_ROOT / "reconciler.yaml").read_bytes())[0].data
    (data / "settings.json").write_text(json.dumps(settings))
    kinds["settings"] = ["settings.json"]
    every = [name for names in kinds.values() for name in names if name != "settings.json"]
    checks = [*kinds.items(), ("document", every)]
    for schema, names in checks:
        files = [arg for name in names for arg in ("-d", str(data / name))]
        done = _ajv(ajv, "validate", "-s", f"{schema}.schema.json",
                    *_references(written, f"{schema}.schema.json"), *files, cwd=written)
        assert done.returncode == 0, f"{schema}: {done.stdout}{done.stderr}"
    broken = json.loads((data / every[0]).read_text())
    broken["metadata"]["name"] = "Not A Label"
    (data / "broken.json").write_text(json.dumps(broken))
    done = _ajv(ajv, "validate", "-s", "document.schema.json",
                *_references(written, "document.schema.json"), "-d",
                str(data / "broken.json"), cwd=written)
    assert done.returncode != 0 and "must match pattern" in done.stdout + done.stderr
