"""The daemon watches the ConfigMaps it manages: a hand edit is restored in about a second,
long before the resync, and the daemon's own writes do not keep it busy."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

from tests.kube.world import STRATEGY_V1, KubeWorld, passes, start_daemon, wait_for


def test_a_hand_edit_is_healed_long_before_the_resync(world: KubeWorld) -> None:
    world.basic()
    world.commit()
    daemon = start_daemon(world, "a", world.root / "a.log", resync="10m")
    log = world.root / "a.log"
    try:
        assert wait_for(lambda: world.configmap("gepetto-code") is not None, 30), log.read_text()
        assert wait_for(lambda: "converged" in log.read_text(), 30), log.read_text()
        time.sleep(1.0)
        settled = passes(world, "a")
        time.sleep(1.5)
        assert passes(world, "a") == settled, "idle: our own writes do not wake us"
        edited = world.configmap("gepetto-code")
        assert edited is not None
        edited["data"]["gepetto.py"] = "print('hot fix')\n"
        world.emulator.put("configmaps", edited)
        assert wait_for(lambda: (world.configmap("gepetto-code") or {}).get("data") ==
                     {"gepetto.py": STRATEGY_V1}, 10), log.read_text()
        assert "drift: ConfigMap gepetto-code on cluster-a modified by someone else" in \
            log.read_text()
        world.emulator.delete_object("configmaps", "ml", "gepetto-settings")
        assert wait_for(lambda: world.configmap("gepetto-settings") is not None, 10), \
            log.read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
    events = [json.loads(line) for line in _history(world.root / "a")]
    assert any(e["action"] == "deliver" and e["detail"].get("drift") for e in events)


def _history(state: Path) -> list[str]:
    with sqlite3.connect(state / "journal.db") as db:
        rows = db.execute("SELECT action, detail FROM events WHERE phase = 'intent'").fetchall()
    return [json.dumps({"action": action, "detail": json.loads(detail)})
            for action, detail in rows]
