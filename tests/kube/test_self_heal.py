"""The daemon watches the ConfigMaps it manages: a hand edit is restored in about a second,
long before the resync, and the daemon's own writes do not keep it busy."""

from __future__ import annotations

import time

from reconciler.journal import Journal
from tests.e2e.daemon import wait_until
from tests.kube.world import STRATEGY_V1, KubeWorld, passes, start_daemon


def test_a_hand_edit_is_healed_long_before_the_resync(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    daemon = start_daemon(world, "a", resync="10m")
    try:
        wait_until(lambda: "converged" in daemon.log(), 30, what="convergence")
        time.sleep(1.0)
        settled = passes(world, "a")
        time.sleep(1.5)
        assert passes(world, "a") == settled, "idle: our own writes do not wake us"
        edited = world.configmap("gepetto-code")
        assert edited is not None
        edited["data"]["gepetto.py"] = "print('hot fix')\n"
        world.emulator.put("configmaps", edited)
        wait_until(lambda: (world.configmap("gepetto-code") or {}).get("data") ==
                   {"gepetto.py": STRATEGY_V1}, 10, what="the hand edit to be healed")
        assert "drift: ConfigMap gepetto-code on cluster-a modified by someone else" in \
            daemon.log()
        world.emulator.delete_object("configmaps", "ml", "gepetto-settings")
        wait_until(lambda: world.configmap("gepetto-settings") is not None, 10,
                   what="the deleted ConfigMap to be restored")
    finally:
        assert daemon.stop() == 0
    journal = Journal(world.root / "a" / "journal.db")
    try:
        assert any(e.action == "deliver" and e.phase == "intent" and e.detail.get("drift")
                   for e in journal.events())
    finally:
        journal.close()
