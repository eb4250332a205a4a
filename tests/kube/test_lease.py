"""Leader election on a coordination.k8s.io/v1 Lease: in-process, then two real daemons."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from reconciler.kube.api import Clusters
from reconciler.kube.lease import LeaseElector
from reconciler.settings import KubeSettings, LeaderElection
from tests.e2e.daemon import wait_until
from tests.kube.emulator import RunningCluster
from tests.kube.world import (
    NAMESPACE,
    KubeWorld,
    daemon_identity,
    daemon_status,
    passes,
    start_daemon,
)


def _elector(cluster: RunningCluster, tmp_path: Path, identity: str,
             seconds: float = 1.0, **clocks: Any) -> LeaseElector:
    """Lease durations are whole seconds in the API."""
    kubeconfig = cluster.kubeconfig(tmp_path / "kc")
    clusters = Clusters(KubeSettings(kubeconfig, 2.0, 0.05))
    return LeaseElector(clusters.get("kmock"), LeaderElection("default", "reconciler", "kmock",
                                                              seconds), identity, **clocks)


class FakeClock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _skewed(seconds: float) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_standby_whose_wall_clock_runs_ahead_does_not_take_a_fresh_lease(
        cluster: RunningCluster, tmp_path: Path) -> None:
    holder = _elector(cluster, tmp_path, "holder", seconds=15)
    ahead = _elector(cluster, tmp_path, "ahead", seconds=15, wall_clock=_skewed(20))
    assert holder.try_acquire()
    assert not ahead.try_acquire(), "renewed 0 s ago: 20 s of skew must not expire it"
    behind_holder = _elector(cluster, tmp_path, "behind", seconds=15, wall_clock=_skewed(-20))
    assert not behind_holder.try_acquire()


def test_expiry_counts_on_the_local_clock_from_the_last_change_seen(
        cluster: RunningCluster, tmp_path: Path) -> None:
    clock = FakeClock()
    holder = _elector(cluster, tmp_path, "holder", seconds=10, wall_clock=_skewed(-3600))
    standby = _elector(cluster, tmp_path, "standby", seconds=10, clock=clock,
                       wall_clock=_skewed(3600))
    assert holder.try_acquire()  # renewTime an hour in the past: no matter
    assert not standby.try_acquire()  # first sight: the full duration starts now
    for _ in range(3):  # the holder renews every few seconds: the record keeps changing
        clock.now += 6
        assert holder.try_acquire()
        assert not standby.try_acquire(), "a renewal seen restarts the count"
    clock.now += 9.5
    assert not standby.try_acquire(), "unchanged for 9.5 s of a 10 s lease: still current"
    assert standby.holder_description().startswith("holder until")
    clock.now += 0.5
    assert standby.try_acquire(), "unchanged for the whole duration on our clock: expired"
    assert cluster.emulator.get("leases", "default", "reconciler")["spec"][
        "holderIdentity"] == "standby"


def test_one_holder_at_a_time_takeover_after_expiry_and_release(
        cluster: RunningCluster, tmp_path: Path) -> None:
    first = _elector(cluster, tmp_path, "daemon-a")
    second = _elector(cluster, tmp_path, "daemon-b")
    assert first.try_acquire()
    assert not second.try_acquire()
    assert second.holder_description().startswith("daemon-a until")
    assert first.try_acquire(), "the holder renews"
    assert not second.try_acquire(), "the standby sees the renewal"
    lease = cluster.emulator.get("leases", "default", "reconciler")
    assert lease["spec"]["holderIdentity"] == "daemon-a"
    assert lease["spec"]["leaseTransitions"] == 0
    time.sleep(1.2)  # no renewal for longer than the lease
    assert second.try_acquire(), "a standby takes over an expired lease"
    lease = cluster.emulator.get("leases", "default", "reconciler")
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == \
        ("daemon-b", 1)
    assert not first.try_acquire(), "the old holder does not get it back while it is current"
    second.release()
    assert cluster.emulator.get("leases", "default", "reconciler")["spec"].get(
        "holderIdentity") is None
    assert first.try_acquire(), "released: taken at once, no expiry wait"


def test_two_standbys_racing_for_an_expired_lease_cannot_both_win(
        cluster: RunningCluster, tmp_path: Path) -> None:
    holder = _elector(cluster, tmp_path, "gone", seconds=1)
    assert holder.try_acquire()
    racer = _elector(cluster, tmp_path, "racer")
    loser = _elector(cluster, tmp_path, "loser")
    assert not racer.try_acquire() and not loser.try_acquire()  # both watch it
    time.sleep(1.2)
    stale = cluster.emulator.get("leases", "default", "reconciler")["metadata"][
        "resourceVersion"]
    assert racer.try_acquire()
    # The loser read the same expired Lease; its takeover carries that resourceVersion.
    api = client.CoordinationV1Api(config.new_client_from_config(
        str(tmp_path / "kc"), context="kmock"))
    with pytest.raises(client.ApiException) as lost:
        api.patch_namespaced_lease(
            "reconciler", "default",
            {"metadata": {"resourceVersion": stale}, "spec": {"holderIdentity": "loser"}},
            _content_type="application/merge-patch+json")
    assert lost.value.status == 409
    assert not loser.try_acquire()
    assert cluster.emulator.get("leases", "default", "reconciler")["spec"][
        "holderIdentity"] == "racer"


def test_a_standby_daemon_never_acts_and_takes_over_on_sigterm_and_after_kill(
        world: KubeWorld) -> None:
    world.basic()
    world.write_settings(leaderElection={"namespace": NAMESPACE, "leaseDuration": "2s",
                                         "context": "kmock"})
    world.commit()
    daemons = [start_daemon(world, "a")]
    try:
        first = daemons[0]
        wait_until(lambda: world.configmap("gepetto-code") is not None, 30,
                   what="the first daemon to deliver")
        second = start_daemon(world, "b")
        daemons.append(second)
        wait_until(lambda: daemon_status(world, "b").startswith("standby"), 30,
                   what="the second daemon to stand by")
        time.sleep(1.5)
        assert passes(world, "b") == 0, "a standby never runs a pass"
        first_identity = daemon_identity(first)
        assert world.emulator.get("leases", NAMESPACE, "reconciler")["spec"][
            "holderIdentity"] == first_identity
        assert first.stop() == 0
        lease = world.emulator.get("leases", NAMESPACE, "reconciler")
        assert lease["spec"].get("holderIdentity") != first_identity, "released on SIGTERM"
        wait_until(lambda: passes(world, "b") > 0, 15, what="the standby to take over")
        assert "acquired the Lease" in second.log()
        third = start_daemon(world, "c")
        daemons.append(third)
        wait_until(lambda: daemon_status(world, "c").startswith("standby"), 30,
                   what="the third daemon to stand by")
        second.kill9()  # no release: the standby must wait for expiry
        killed_at = time.monotonic()
        wait_until(lambda: passes(world, "c") > 0, 20, what="takeover after expiry")
        assert time.monotonic() - killed_at >= 1.0, "not before the lease expired"
        assert third.stop() == 0
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.kill9()


def test_apply_refuses_while_a_daemon_holds_the_lease(world: KubeWorld, tmp_path: Path
                                                      ) -> None:
    world.basic()
    world.write_settings(leaderElection={"namespace": NAMESPACE, "leaseDuration": "2s",
                                         "context": "kmock"})
    world.commit()
    holder = LeaseElector(Clusters(KubeSettings(world.kubeconfig, 2.0, 0.05)).get("kmock"),
                          LeaderElection(NAMESPACE, "reconciler", "kmock", 2), "the-daemon")
    assert holder.try_acquire()
    renewing = threading.Event()

    def renew() -> None:  # a live daemon renews every third of the duration
        while not renewing.wait(0.5):
            holder.try_acquire()

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "reconciler", "apply", "--config",
                           str(world.config)], capture_output=True, text=True, env=env,
                          cwd=world.root, check=False, timeout=60)
    renewing.set()
    renewer.join(timeout=10)
    assert done.returncode == 1
    assert "standby: Lease ml/reconciler held by the-daemon" in done.stderr
    assert world.configmap("gepetto-code") is None, "nothing applied"
    holder.release()
    done = subprocess.run([sys.executable, "-m", "reconciler", "apply", "--config",
                           str(world.config)], capture_output=True, text=True, env=env,
                          cwd=world.root, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert world.configmap("gepetto-code") is not None
    lease = world.emulator.get("leases", NAMESPACE, "reconciler")
    assert not lease["spec"].get("holderIdentity"), "apply released the Lease after its pass"


def test_apply_takes_a_lease_whose_holder_died_after_watching_it_expire(
        world: KubeWorld) -> None:
    world.basic()
    world.write_settings(leaderElection={"namespace": NAMESPACE, "leaseDuration": "2s",
                                         "context": "kmock"})
    world.commit()
    dead = LeaseElector(Clusters(KubeSettings(world.kubeconfig, 2.0, 0.05)).get("kmock"),
                        LeaderElection(NAMESPACE, "reconciler", "kmock", 2), "killed-daemon")
    assert dead.try_acquire()  # then never renews nor releases: kill -9
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "reconciler", "apply", "--config",
                           str(world.config)], capture_output=True, text=True,
                          cwd=world.root, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "held by killed-daemon" in done.stderr and "waiting for it to expire" in done.stderr
    assert time.monotonic() - started >= 2.0, "not before a whole duration on its own clock"
    assert world.configmap("gepetto-code") is not None
