"""Issue 12, defect 2: nothing a workload plants under a root (a symlink where a delivered
file or folder belongs) is followed, shown or stored; it is drift, and replaced.

The defects run through the CLI as a subprocess; the resolver runs both ways, openat2 and
the O_NOFOLLOW walk (``RECONCILER_RESOLVE_WALK``), so the fallback is proven too.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.desired.documents import Origin, build
from reconciler.digests import DigestCache
from reconciler.local import beneath
from reconciler.local.fleet import LocalFleet
from reconciler.store import Store
from tests.conftest import Result
from tests.fleet import HEALTHY, Fleet, sha

RESOLVERS = ["openat2", "walk"]
SECRET = b"TOPSECRET-api-key-0123456789\n"
ORIGIN = Origin("targets.yaml", "0" * 40, 0, 1)


def _env(resolver: str) -> dict[str, str]:
    return {beneath.FORCE_WALK_VARIABLE: "1"} if resolver == "walk" else {}


@pytest.fixture(params=RESOLVERS)
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process resolves one way or the other; ``_env`` tells subprocesses the same."""
    beneath.uses_openat2.cache_clear()
    if request.param == "walk":
        monkeypatch.setenv(beneath.FORCE_WALK_VARIABLE, "1")
    else:
        monkeypatch.delenv(beneath.FORCE_WALK_VARIABLE, raising=False)
        if not beneath.uses_openat2():
            pytest.skip("this kernel (or its seccomp filter) has no openat2")
    assert beneath.uses_openat2() is (request.param == "openat2")
    yield request.param
    beneath.uses_openat2.cache_clear()


def _open_on(folder: Path) -> int:
    """Descriptors this process holds on ``folder``."""
    held = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            held += os.readlink(f"/proc/self/fd/{name}") == str(folder)
    return held


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("resolver_name", RESOLVERS)
def test_a_folder_replaced_by_a_link_never_takes_a_delivery_outside_the_root(
        tmp_path: Path, cli: Callable[..., Result], resolver_name: str) -> None:
    fleet = Fleet(tmp_path)
    config = str(fleet.settings_file)
    assert cli("apply", "--config", config, env=_env(resolver_name)).returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    for folder in ("app", "models"):  # what a workload running as the daemon's user can do
        shutil.rmtree(fleet.root / folder)
        os.symlink(outside, fleet.root / folder)
    fleet.strategy("OK = 'v2'\n")
    fleet.model(b"weights-v2")
    fleet.commit("v2")
    applied = cli("apply", "--config", config, env=_env(resolver_name))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert list(outside.iterdir()) == [], "nothing landed outside the root"
    assert not (fleet.root / "app").is_symlink() and not (fleet.root / "models").is_symlink()
    assert (fleet.root / "app" / "app.py").read_text() == "OK = 'v2'\n"
    pointer = fleet.root / "models" / "current.bin"
    assert os.readlink(pointer) == str(fleet.state / "store" / "sha256" / sha(b"weights-v2"))


@pytest.mark.parametrize("resolver_name", RESOLVERS)
def test_a_secret_linked_in_place_of_a_delivered_file_is_never_shown_or_stored(
        tmp_path: Path, cli: Callable[..., Result], resolver_name: str) -> None:
    fleet = Fleet(tmp_path)
    config = str(fleet.settings_file)
    assert cli("apply", "--config", config).returncode == 0
    secret = tmp_path / "secret.key"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    delivered = fleet.root / "app" / "app.py"
    delivered.unlink()
    os.symlink(secret, delivered)
    env = _env(resolver_name)
    for output in ("text", "json"):
        planned = cli("plan", "--config", config, "--output", output, env=env)
        assert planned.returncode == 2, planned.stdout + planned.stderr
        assert b"TOPSECRET" not in (planned.stdout + planned.stderr).encode()
    applied = cli("apply", "--config", config, env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert delivered.is_file() and not delivered.is_symlink()
    assert delivered.read_text() == HEALTHY, "the link was replaced by the declared content"
    assert secret.read_bytes() == SECRET and stat.S_IMODE(secret.stat().st_mode) == 0o600
    stored = _files(fleet.state / "store")
    assert SECRET not in stored.values() and sha(SECRET) not in str(stored)
    history = cli("history", "--config", config, "--output", "json")
    assert sha(SECRET) not in history.stdout, "not the 'from' of a journaled delivery"
    repairs = [e for e in json.loads(history.stdout) if e["action"] == "deliver"
               and e["phase"] == "intent" and e["detail"].get("drift")]
    put_back = [(e["detail"]["from"], e["detail"]["to"]) for e in repairs]
    assert put_back == [(None, sha(HEALTHY.encode()))], "drift put back, from nothing"


# The resolver itself, both ways.

def test_links_on_the_way_or_at_the_end_and_dot_dot_are_refused(tmp_path: Path,
                                                                 resolver: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (root / "real" / "file").write_bytes(b"mine")
    (outside / "file").write_bytes(b"not mine")
    os.symlink(outside, root / "linked")
    os.symlink(outside / "file", root / "real" / "linked-file")
    base = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        descriptor = beneath.open_beneath(base, "real/file", os.O_RDONLY)
        assert os.read(descriptor, 10) == b"mine"
        os.close(descriptor)
        for path, code in (("linked/file", errno.ELOOP), ("real/linked-file", errno.ELOOP),
                           ("real/../linked/file", errno.EXDEV), ("/etc/passwd", errno.EXDEV)):
            with pytest.raises(OSError) as refused:
                beneath.open_beneath(base, path, os.O_RDONLY)
            assert refused.value.errno == code, path
    finally:
        os.close(base)


def test_a_linked_folder_is_replaced_by_a_real_one_and_a_file_is_left_alone(
        tmp_path: Path, resolver: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "a")
    (root / "f").write_bytes(b"a file, not ours to remove")
    base = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(beneath.folder(base, "a/b"))
        with pytest.raises(NotADirectoryError):
            beneath.folder(base, "f/x")
    finally:
        os.close(base)
    assert (root / "a" / "b").is_dir() and not (root / "a").is_symlink()
    assert list(outside.iterdir()) == []
    assert (root / "f").read_bytes() == b"a file, not ours to remove"


def test_the_fleet_reports_links_as_drift_and_acts_beneath_the_root(tmp_path: Path,
                                                                    resolver: str) -> None:
    digests = DigestCache()
    store = Store(tmp_path / "store", digests)
    fleet = LocalFleet(tmp_path / "fleet", store, digests)
    target = build("Target", {"metadata": {"name": "edge"},
                              "spec": {"local": {"root": "edge"}}}, ORIGIN)
    root, outside = tmp_path / "fleet" / "edge", tmp_path / "outside"
    root.mkdir(parents=True)
    outside.mkdir()
    (outside / "app.py").write_bytes(SECRET)
    os.symlink(outside, root / "app")
    os.symlink(outside, root / "models")
    seen = fleet.observe(target, ["app/app.py"], ["models/current.bin"])
    assert seen.files["app/app.py"].sha256 is None
    assert "symlink where a file or folder belongs" in (seen.files["app/app.py"].problem or "")
    assert "symlink" in (seen.pointers["models/current.bin"].problem or "")
    assert fleet.read(target, "app/app.py") is None
    assert fleet.preserve(target, "app/app.py") is None
    fleet.write(target, "app/app.py", b"OK = 1\n", 0o640)
    fleet.flip(target, "models/current.bin", store.put(b"weights"))
    assert _files(outside) == {"app.py": SECRET}
    assert (root / "app" / "app.py").read_bytes() == b"OK = 1\n"
    assert (root / "models" / "current.bin").read_bytes() == b"weights"
    assert fleet.observe(target, ["app/app.py"], []).files["app/app.py"].sha256 == \
        sha(b"OK = 1\n")
    assert _open_on(tmp_path / "fleet") == 1, "the base, opened once for every call"
    del fleet
    gc.collect()
    assert _open_on(tmp_path / "fleet") == 0, "and closed with its fleet"
