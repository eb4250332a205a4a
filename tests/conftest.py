"""Shared fixtures: real git repositories (made with the git CLI) and the CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "desired-state"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                            env={**os.environ, **GIT_ENV, **(env or {})}, check=False)
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


@dataclass
class Repo:
    """A real git repository whose desired-state/ starts as a copy of the example."""

    path: Path

    @property
    def folder(self) -> Path:
        return self.path / "desired-state"

    def write(self, relative: str, content: str | bytes) -> None:
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.write_text(content)
        else:
            target.write_bytes(content)

    def commit(self, message: str, *extra: str) -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message, *extra)
        return git(self.path, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    shutil.copytree(EXAMPLE, path / "desired-state")
    made = Repo(path)
    made.commit("example desired state")
    return made


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Result]:
    """Runs ``python -m reconciler`` as a real subprocess, with its own state dir."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
        done = subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd or tmp_path,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **GIT_ENV, **(env or {})}, check=False)
        return Result(done.returncode, done.stdout, done.stderr)

    return run


def example_copy(tmp_path: Path) -> Path:
    """A writable copy of the example folder, for one mutation per test."""
    folder = tmp_path / "desired-state"
    shutil.copytree(EXAMPLE, folder)
    return folder


def survivors(marker: str, wait: float = 20.0) -> list[int]:
    """Live (not zombie) processes whose command line holds ``marker``, after giving the
    kernel ``wait`` seconds to tear a killed sandbox down (a fork bomb's hundred processes
    take seconds to die on a loaded host). Sandboxed code cannot tell us
    its host PIDs (it sees its own PID namespace), so a marker in argv finds it."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if marker.encode() in cmdline and state != "Z":
                found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
