"""One behaviour suite for every place: what the executor relies on, run against a local
directory tree and against a Kubernetes namespace (the official client over HTTP against
the emulated API server). A third kind of target adds one fixture branch here."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired.documents import Desired, Model, Origin, Restart, Target, build
from reconciler.digests import DigestCache
from reconciler.places import Fleet, Place
from reconciler.store import Store
from tests.kube.emulator import RunningCluster
from tests.kube.world import deployment

ORIGIN = Origin("t.yaml", "0" * 40, 0, 1)
REVISION = "main@sha1:" + "a" * 40
V1, V2 = b"weights v1\n" * 8, b"weights v2\n" * 8


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    """A place on one target, the fleet that observes it, and the addresses to use."""

    fleet: Fleet
    place: Place
    target: Target
    store: Store
    file: str
    model: Model
    restart: Restart


def _model(pointer: dict[str, Any]) -> Model:
    model: Model = build("Model", {"metadata": {"name": "policy"}, "spec": {
        "targets": ["edge"], "artifact": {"uri": "https://models.invalid/p.pt",
                                          "sha256": sha(V2)},
        "pointer": pointer}}, ORIGIN)
    return model


def _local(tmp_path: Path, store: Store, digests: DigestCache) -> World:
    from reconciler.local.fleet import LocalFleet

    target: Target = build("Target", {"metadata": {"name": "edge"},
                                      "spec": {"local": {"root": "edge"}}}, ORIGIN)
    fleet = LocalFleet(tmp_path / "fleet", store, digests)
    restart = build("Strategy", {"metadata": {"name": "s"}, "spec": {
        "source": "s.py", "targets": ["edge"], "deliver": {"path": "app/app.py"},
        "restart": {"command": ["python3", "-c", "open('restarted', 'a').write('x')"]}}},
        ORIGIN).restart
    return World(fleet, fleet.place(target), target, store, "app/app.py",
                 _model({"path": "models/current.bin"}), restart)


@pytest.fixture(params=["local", "kubernetes"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    digests = DigestCache()
    store = Store(tmp_path / "store", digests)
    if request.param == "local":
        yield _local(tmp_path, store, digests)
        return
    from reconciler.kube.api import Clusters
    from reconciler.kube.fleet import KubernetesFleet
    from reconciler.settings import KubeSettings

    with RunningCluster() as cluster:
        cluster.emulator.namespaces.add("ml")
        cluster.emulator.put("deployments", deployment("gepetto", "ml"))
        kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig", {"kmock": "ml"})
        clusters = Clusters(KubeSettings(kubeconfig=kubeconfig, poll_seconds=0.05,
                                         request_timeout_seconds=2))
        target: Target = build("Target", {"metadata": {"name": "edge"}, "spec": {
            "kubernetes": {"context": "kmock", "namespace": "ml"}}}, ORIGIN)
        fleet = KubernetesFleet(clusters, store)
        restart = Restart(None, "gepetto", 5.0)
        yield World(fleet, fleet.place(target), target, store, "gepetto-code/app.py",
                    _model({"configMap": {"name": "canonical-models", "key": "policy"}}),
                    restart)


def _observe(world: World) -> tuple[str | None, str | None]:
    address = world.model.pointer.path or \
        f"{world.model.pointer.config_map.name}/{world.model.pointer.config_map.key}"  # type: ignore[union-attr]
    seen = world.fleet.observe(world.target, [world.file], [address])
    assert seen.error is None, seen.error
    return seen.files[world.file].sha256, seen.pointers[address].sha256


def test_written_content_is_observed_read_back_and_removed(world: World) -> None:
    assert _observe(world) == (None, None)
    world.place.write(world.file, b"OK = 1\n", None, REVISION)
    assert _observe(world)[0] == sha(b"OK = 1\n")
    assert world.fleet.read(world.target, world.file) == b"OK = 1\n"
    world.place.write(world.file, b"OK = 2\n", None, REVISION)
    assert world.fleet.read(world.target, world.file) == b"OK = 2\n"
    world.place.remove(world.file, REVISION)
    assert _observe(world)[0] is None


def test_preserve_keeps_the_live_content_in_the_store(world: World) -> None:
    world.place.preserve(world.file)  # nothing there yet: nothing to keep, no error
    world.place.write(world.file, b"live before the change\n", None, REVISION)
    _observe(world)
    world.place.preserve(world.file)
    assert world.store.read(sha(b"live before the change\n")) == b"live before the change\n"


def test_flip_names_the_digest_and_point_back_restores_the_exact_previous_value(
        world: World) -> None:
    desired: Desired = Desired(REVISION, {}, {}, {}, {}, {}, {}, {}, lambda obj: b"",
                               lambda path: b"")
    world.store.put(V1)
    world.store.put(V2)
    _observe(world)
    assert world.place.pointer_before(world.model, desired) is None
    world.place.flip(world.model, sha(V1), REVISION)
    assert _observe(world)[1] == sha(V1)
    before = world.place.pointer_before(world.model, desired)
    world.place.flip(world.model, sha(V2), REVISION)
    assert _observe(world)[1] == sha(V2) and world.place.pointed(world.model) == sha(V2)
    world.place.point_back(world.model, before, REVISION)
    assert _observe(world)[1] == sha(V1) and world.place.pointed(world.model) == sha(V1)
    world.place.point_back(world.model, None, REVISION)
    assert _observe(world)[1] is None


def test_restart_then_check_succeeds_and_a_stop_ends_the_check(world: World) -> None:
    world.place.write(world.file, b"OK = 1\n", None, REVISION)
    restarted = world.place.restart("Strategy", "s", world.restart, sha(b"OK = 1\n"), REVISION)
    assert restarted.ok, restarted.detail
    health = build("Strategy", {"metadata": {"name": "s"}, "spec": {
        "source": "s.py", "targets": ["edge"], "deliver": {"path": "x"},
        "health": {"command": ["true"], "soak": "30s"}}}, ORIGIN).health
    if world.place.has_check(world.restart, health):
        stop = threading.Event()
        stop.set()  # a stop request ends a soak at once, without passing it
        checked = world.place.check("Strategy", "s", world.restart, health,
                                    sha(b"OK = 1\n"), REVISION, stop)
        assert not checked.ok and "stop" in checked.detail
