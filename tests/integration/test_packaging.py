"""The distribution: built from a copy of the checkout with setuptools, as `python -m build`
would, the sdist holds every tracked file (tests, docs, systemd, deploy, schemas, the
example desired state, bench, scripts) and the metadata a user of PyPI sees; the wheel
holds the package, its schemas and the `reconciler` command."""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from reconciler import __version__
from tests.conftest import REPO_ROOT

DISTRIBUTION = "reconciler-gitops"
ARCHIVE_STEM = f"reconciler_gitops-{__version__}"


def _listed() -> list[str]:
    """Tracked paths that the working tree still has."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True,
                            check=True, timeout=60).stdout.decode()
    return [name for name in listed.split("\0")
            if name and ((REPO_ROOT / name).is_symlink() or (REPO_ROOT / name).is_file())]


def _tracked() -> set[str]:
    """Tracked files as the sdist holds them: a link to a folder (reconciler/schemas ->
    ../schemas) as the files beneath it."""
    found = set()
    for name in _listed():
        path = REPO_ROOT / name
        if path.is_symlink() and path.is_dir():
            found |= {f"{name}/{p.relative_to(path)}" for p in path.rglob("*") if p.is_file()}
        else:
            found.add(name)
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An sdist and a wheel, built from a copy of the tracked files (the build writes
    egg-info beside the sources)."""
    source = tmp_path_factory.mktemp("source")
    for name in _listed():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO_ROOT / name).is_symlink():
            (source / name).symlink_to(os.readlink(REPO_ROOT / name))
        else:
            (source / name).write_bytes((REPO_ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("dist")
    # setuptools logs on stdout too: the name goes to a file. One process per build, as
    # a build frontend does.
    build = ("import sys; from pathlib import Path; from setuptools import build_meta; "
             "Path(sys.argv[3]).write_text(getattr(build_meta, sys.argv[1])(sys.argv[2]))")
    built = {}
    for kind in ("sdist", "wheel"):
        name = source / f"{kind}.txt"
        done = subprocess.run([sys.executable, "-c", build, f"build_{kind}", str(out),
                               str(name)], cwd=source, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        built[kind] = out / name.read_text()
    return built


def test_the_sdist_holds_every_tracked_file(built: dict[str, Path]) -> None:
    assert built["sdist"].name == f"{ARCHIVE_STEM}.tar.gz"
    with tarfile.open(built["sdist"]) as archive:
        names = {member.name.split("/", 1)[1] for member in archive.getmembers()
                 if member.isfile()}
    missing = _tracked() - names
    assert missing == set(), f"left out of the sdist: {sorted(missing)[:20]}"
    for needed in ("LICENSE", "docs/install.md", "systemd/reconciler.service",
                   "systemd/reconciler.sysusers", "systemd/reconciler.tmpfiles",
                   "deploy/kustomization.yaml", "deploy/images/daemon.Containerfile",
                   "deploy/images/gauntlet.Containerfile", "scripts/build-images.sh",
                   "scripts/install-opt.sh", "desired-state/targets.yaml",
                   "tests/conftest.py", "bench/report.py", "PKG-INFO"):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_metadata_names_a_free_distribution_with_a_licence(
        built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as wheel:
        metadata_text = wheel.read(f"{ARCHIVE_STEM}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"{ARCHIVE_STEM}.dist-info/entry_points.txt").decode()
        names = set(wheel.namelist())
    metadata = email.parser.Parser().parsestr(metadata_text)
    # `reconciler` on PyPI is an unrelated project (pandas reconciliation).
    assert metadata["Name"] == DISTRIBUTION
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert f"{ARCHIVE_STEM}.dist-info/licenses/LICENSE" in names
    classifiers = metadata.get_all("Classifier")
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert "Typing :: Typed" in classifiers
    assert any(url.startswith("Documentation, https://") for url in
               metadata.get_all("Project-URL"))
    # The command and the import keep their names.
    assert "reconciler = reconciler.cli:main" in entry_points
    assert "reconciler/py.typed" in names
    shipped_schemas = {n for n in names if n.startswith("reconciler/schemas/")}
    assert shipped_schemas == {f"reconciler/{p.relative_to(REPO_ROOT / 'reconciler')}"
                               for p in (REPO_ROOT / "reconciler" / "schemas").iterdir()
                               if p.is_file()}
    assert not [n for n in names if n.startswith(("tests/", "bench/"))], "not in the wheel"
    assert (REPO_ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
