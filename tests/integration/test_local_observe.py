"""Observing a local target (read-only) and the stat-keyed digest cache."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from reconciler.desired.documents import Origin, build
from reconciler.digests import DigestCache
from reconciler.local.fleet import LocalFleet
from reconciler.store import Store

ORIGIN = Origin("targets.yaml", "0" * 40, 0, 1)


def _fleet(tmp_path: Path) -> LocalFleet:
    digests = DigestCache()
    return LocalFleet(tmp_path / "fleet", Store(tmp_path / "store", digests), digests)


def test_files_are_observed_by_digest_and_problems_are_named(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    target = build("Target", {"metadata": {"name": "staging"},
                              "spec": {"local": {"root": "staging"}}}, ORIGIN)
    root = tmp_path / "fleet" / "staging"
    (root / "config").mkdir(parents=True)
    (root / "config" / "a.json").write_bytes(b"{}\n")
    (root / "config" / "dir.json").mkdir()
    seen = fleet.observe(target, ["config/a.json", "config/missing.json", "config/dir.json"], [])
    assert seen.location == str(root)
    assert seen.files["config/a.json"].sha256 == hashlib.sha256(b"{}\n").hexdigest()
    assert seen.files["config/missing.json"].sha256 is None
    assert seen.files["config/missing.json"].problem is None
    assert "not a regular file" in (seen.files["config/dir.json"].problem or "")


def test_absolute_roots_are_used_as_they_are(tmp_path: Path) -> None:
    target = build("Target", {"metadata": {"name": "prod"},
                              "spec": {"local": {"root": str(tmp_path / "srv")}}}, ORIGIN)
    assert _fleet(tmp_path).root_of(target) == tmp_path / "srv"


def test_pointers_name_store_objects_and_anything_else_is_a_problem(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    target = build("Target", {"metadata": {"name": "staging"},
                              "spec": {"local": {"root": "staging"}}}, ORIGIN)
    root = tmp_path / "fleet" / "staging"
    root.mkdir(parents=True)
    digest = hashlib.sha256(b"weights").hexdigest()  # the store proves objects by content
    fleet.store.location(digest).parent.mkdir(parents=True)
    fleet.store.location(digest).write_bytes(b"weights")
    os.symlink(fleet.store.location(digest), root / "good.pt")
    os.symlink(fleet.store.location("b" * 64), root / "dangling.pt")
    os.symlink(tmp_path / "elsewhere.pt", root / "outside.pt")
    (tmp_path / "elsewhere.pt").write_bytes(b"hand-copied weights")
    (root / "plain.pt").write_bytes(b"ln -sf was never run")
    seen = fleet.observe(target, [], ["good.pt", "dangling.pt", "outside.pt", "plain.pt",
                                      "absent.pt"])
    pointers = seen.pointers
    assert pointers["good.pt"].sha256 == digest
    assert pointers["dangling.pt"].sha256 is None
    assert "dangling" in (pointers["dangling.pt"].problem or "")
    assert "outside the content-addressed store" in (pointers["outside.pt"].problem or "")
    assert "not a symlink" in (pointers["plain.pt"].problem or "")
    assert (pointers["absent.pt"].link, pointers["absent.pt"].problem) == (None, None)


def test_digest_cache_keeps_settled_files_and_rehashes_changed_ones(tmp_path: Path) -> None:
    store = tmp_path / "digests.json"
    settled, fresh = tmp_path / "settled.bin", tmp_path / "fresh.bin"
    settled.write_bytes(b"one")
    old = time.time() - 60
    os.utime(settled, (old, old))
    fresh.write_bytes(b"new")
    cache = DigestCache(store)
    assert cache.sha256(settled) == hashlib.sha256(b"one").hexdigest()
    assert cache.sha256(fresh) == hashlib.sha256(b"new").hexdigest()
    cache.save()
    entries = json.loads(store.read_text())["entries"]
    # A file modified within the racy window is not trusted to the cache.
    assert list(entries) == [str(settled)]

    reloaded = DigestCache(store)
    assert reloaded.sha256(settled) == hashlib.sha256(b"one").hexdigest()
    settled.write_bytes(b"two")  # same size, new content: ctime and mtime change
    os.utime(settled, (old, old))  # even with mtime forged back, ctime gives it away
    assert reloaded.sha256(settled) == hashlib.sha256(b"two").hexdigest()


def test_damaged_digest_cache_is_ignored(tmp_path: Path) -> None:
    store = tmp_path / "digests.json"
    store.write_text("{not json")
    target = tmp_path / "f"
    target.write_bytes(b"x")
    assert DigestCache(store).sha256(target) == hashlib.sha256(b"x").hexdigest()
