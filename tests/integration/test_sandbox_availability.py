"""No sandbox, no repository code: the CLI says why and how to fix it, caches nothing,
and runs repository code unsandboxed only when the settings say ``sandbox: none``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.diagnostics import InvalidInput
from reconciler.settings import load_settings
from tests.conftest import EXAMPLE, REPO_ROOT, Result, example_copy

NO_BWRAP_PATH = "/nonexistent"  # PATH without bwrap (the CLI itself runs by full path)


def test_without_bubblewrap_nothing_runs_and_nothing_is_cached(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    folder = example_copy(tmp_path)
    state = str(tmp_path / "state")
    refused = cli("validate", str(folder), "--state-dir", state, env={"PATH": NO_BWRAP_PATH})
    assert refused.returncode == 3, "cannot check: not a verdict on the desired state"
    assert "SandboxUnavailable" in refused.stderr
    assert "apt-get install bubblewrap" in refused.stderr
    assert "'sandbox: none'" in refused.stderr
    # Once bwrap is there, the same state dir checks for real: no failure was remembered.
    fixed = cli("validate", str(folder), "--state-dir", state)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


def test_refused_namespaces_are_named_with_the_fix(tmp_path: Path) -> None:
    folder = example_copy(tmp_path)
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    # The CLI in a user namespace that may not create more: as a host whose kernel or
    # systemd unit refuses unprivileged user namespaces.
    done = subprocess.run([bwrap, "--dev-bind", "/", "/", "--unshare-user", "--disable-userns",
                           "--", sys.executable, "-m", "reconciler", "validate", str(folder)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "refuses bubblewrap's namespaces" in done.stderr
    assert "user.max_user_namespaces" in done.stderr


def test_sandbox_none_is_an_explicit_opt_out(tmp_path: Path) -> None:
    folder = example_copy(tmp_path)
    script = ("import sys; from reconciler.sandbox import runner; runner.configure('none'); "
              f"from reconciler.cli import main; sys.exit(main(['validate', {str(folder)!r}]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, check=False,
                          env={"PATH": NO_BWRAP_PATH, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_setting_is_read_and_checked(tmp_path: Path) -> None:
    settings = tmp_path / "reconciler.yaml"
    settings.write_text("sandbox: none\n")
    assert load_settings(settings, {}).sandbox == "none"
    settings.write_text("repo: .\n")
    assert load_settings(settings, {}).sandbox == "bwrap"
    settings.write_text("repo: .\nsandbox: maybe\n")
    with pytest.raises(InvalidInput) as refused:
        load_settings(settings, {})
    assert str(refused.value).startswith(f"{settings}:2:10: ")


def test_under_the_units_protections_the_sandbox_runs_without_proc(
        tmp_path: Path, cli: Callable[..., Result]) -> None:
    folder = example_copy(tmp_path)
    (folder / "strategies" / "gepetto.py").write_text(
        "import os\nassert not os.path.exists('/proc/self'), 'a /proc after all'\n"
        "def select_chutes():\n    return []\n")
    spec = folder / "strategies" / "gepetto.yaml"
    spec.write_text(spec.read_text().replace("  tests:\n    - strategies/test_gepetto.py\n",
                                             ""))
    # ProtectKernelTunables= over-mounts parts of /proc read-only; the kernel then refuses
    # a fresh /proc to a user namespace. The same over-mount, in a private mount namespace:
    command = (f"mount --bind -o ro /proc/sys /proc/sys && exec {sys.executable} -m "
               f"reconciler validate {folder}")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           command], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_check_made_without_the_sandbox_is_not_reused_with_it() -> None:
    script = ("from reconciler.desired.cache import DesiredCache; "
              "from reconciler.desired.loader import load_desired; "
              "from reconciler.desired.strategy_check import check_key; "
              "from reconciler.sandbox import runner; "
              "from reconciler.source.directory import DirectorySnapshot; "
              f"s = DirectorySnapshot(__import__('pathlib').Path({str(EXAMPLE)!r}), ''); "
              "d = load_desired(s, DesiredCache('t'), run_strategy_checks=False); "
              "keys = [check_key(d.strategies['gepetto'], s.entries()) "
              "        for mode in ('bwrap', 'none', 'bwrap') if runner.configure(mode)]; "
              "print(keys[0] != keys[1], keys[0] == keys[2])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, check=False)
    assert done.stdout.split() == ["True", "True"], done.stderr
