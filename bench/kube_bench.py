"""A Kubernetes target against kmock's emulator (tests/kube/emulator.py) over real HTTP.

Measures, with the real ``kubernetes`` client:

- requests per no-op pass at 200 managed objects. Anchor: what a reconciler that reads
  each object (one GET per ConfigMap) would send. Target: at most 2 requests, nothing
  re-sent (no PATCH);
- pass time at 10, 100 and 1,000 objects: the first (converging) pass and a no-op pass.
  Anchor, measured in the same run: one bare LIST of the same ConfigMaps with the same
  client (what observing them costs at the least). The no-op pass is reported as a ratio
  to it; target: a no-op pass within 10x a bare LIST plus the fixed cost of a pass at 10
  objects (git fetch, load, plan), i.e. it must not grow with requests per object.

- drift heal latency: a daemon, a hand edit of a managed ConfigMap, the time until it is
  restored. Anchor, in the same run: the same daemon with ``watch: false`` and a 4-second
  resync (drift waits for the resync, as with Flux's interval). Target: the watch heals
  at least 3x faster at the median.

Run: ``.venv/bin/python bench/kube_bench.py [--sizes 10,100,1000] [--edits 8]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from report import finish

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client, config

from reconciler.app import Wiring
from reconciler.journal import Journal
from reconciler.passes import run_pass
from reconciler.settings import load_settings
from tests.conftest import git
from tests.kube.emulator import RunningCluster

NAMESPACE = "bench"


def _desired(folder: Path, objects: int) -> None:
    folder.mkdir(parents=True)
    (folder / "targets.yaml").write_text(json.dumps({
        "apiVersion": "reconciler/v1", "kind": "Target", "metadata": {"name": "cluster"},
        "spec": {"kubernetes": {"context": "kmock", "namespace": NAMESPACE}}}))
    documents = []
    for index in range(objects):
        documents.append(json.dumps({
            "apiVersion": "reconciler/v1", "kind": "Config",
            "metadata": {"name": f"settings-{index:04d}"},
            "spec": {"targets": ["cluster"], "format": "json",
                     "data": {"index": index, "threshold": 0.5, "budget": {"calls": 10}},
                     "deliver": {"configMap": {"name": f"settings-{index:04d}",
                                               "key": "settings.json"}}}}))
    (folder / "configs.yaml").write_text("\n---\n".join(documents))


@contextlib.contextmanager
def _fleet(root: Path, objects: int, **settings: Any) -> Iterator[tuple[RunningCluster, Path]]:
    """An emulated cluster, a repository declaring ``objects`` Configs for it, and the
    settings file (with ``settings`` on top) that points the daemon at both."""
    with RunningCluster() as cluster:
        cluster.emulator.namespaces.add(NAMESPACE)
        kubeconfig = cluster.kubeconfig(root / "kubeconfig", {"kmock": NAMESPACE})
        repo = root / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        _desired(repo / "desired-state", objects)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "bench")
        settings_file = root / "reconciler.yaml"
        kube = {"kubeconfig": str(kubeconfig), **settings.pop("kubernetes", {})}
        settings_file.write_text(json.dumps({
            "repo": str(repo), "stateDir": str(root / "state"), "listen": "",
            "kubernetes": kube, **settings}))
        yield cluster, settings_file


def _one_size(objects: int, root: Path) -> dict[str, Any]:
    with _fleet(root, objects) as (cluster, settings_file):
        settings = load_settings(settings_file, {})
        journal = Journal(settings.journal_path)

        def one_pass() -> tuple[float, str, dict[tuple[str, str], int]]:
            before = dict(cluster.emulator.counters.by_kind)
            started = time.perf_counter()
            outcome = run_pass(Wiring(settings), journal, threading.Event())
            seconds = time.perf_counter() - started
            spent = {k: v - before.get(k, 0) for k, v in cluster.emulator.counters.by_kind.items()
                     if v != before.get(k, 0)}
            return seconds, outcome.result, spent

        first_seconds, first_result, _ = one_pass()
        assert first_result == "changed", first_result
        noop = [one_pass() for _ in range(5)]
        assert all(result == "converged" for _, result, _ in noop)
        noop_seconds = sorted(s for s, _, _ in noop)[len(noop) // 2]
        core = client.CoreV1Api(config.new_client_from_config(str(root / "kubeconfig"),
                                                              context="kmock"))
        lists = []
        for _ in range(5):
            started = time.perf_counter()
            listed = core.list_namespaced_config_map(NAMESPACE)
            lists.append(time.perf_counter() - started)
        assert len(listed.items) == objects
        per_object_gets = 0
        before = cluster.emulator.counters.total()
        started = time.perf_counter()
        for item in listed.items:
            core.read_namespaced_config_map(item.metadata.name, NAMESPACE)
        per_object_seconds = time.perf_counter() - started
        per_object_gets = cluster.emulator.counters.total() - before
        journal.close()
        bare_list = sorted(lists)[len(lists) // 2]
        return {"objects": objects, "first_pass_s": round(first_seconds, 3),
                "noop_pass_s": round(noop_seconds, 4), "bare_list_s": round(bare_list, 4),
                "noop_over_bare_list": round(noop_seconds / bare_list, 1),
                "noop_requests": noop[-1][2],
                "anchor_get_each_requests": per_object_gets,
                "anchor_get_each_s": round(per_object_seconds, 3)}


def _heal_latency(edits: int, watch: bool, root: Path) -> list[float]:
    """Seconds from a hand edit to the restored content, ``edits`` times."""
    with _fleet(root, 10, resync="4s", kubernetes={"watch": watch}) as (cluster,
                                                                         settings_file):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root),
               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config",
                                   str(settings_file)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=env)
        try:
            name = "settings-0003"

            def live() -> dict[str, Any] | None:
                return cluster.emulator.get("configmaps", NAMESPACE, name)  # type: ignore

            deadline = time.monotonic() + 60
            while live() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            want = live()
            assert want is not None, "the daemon did not converge"
            latencies = []
            for edit in range(edits):
                time.sleep(random.uniform(0.5, 1.5))  # edits at random moments
                edited = live()
                assert edited is not None
                edited["data"]["settings.json"] = f'{{"edited": {edit}}}'
                started = time.perf_counter()
                cluster.emulator.put("configmaps", edited)
                while (live() or {}).get("data") != want["data"]:
                    time.sleep(0.01)
                latencies.append(time.perf_counter() - started)
            return latencies
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,200,1000")
    parser.add_argument("--edits", type=int, default=8)
    arguments = parser.parse_args()
    sizes = [int(s) for s in arguments.sizes.split(",")]
    results = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="kube-bench-") as scratch:
            results[str(size)] = _one_size(size, Path(scratch))
    checks = {}
    if "200" in results:
        at_200 = results["200"]
        requests = sum(at_200["noop_requests"].values())
        at_200["noop_requests_total"] = requests
        at_200["fewer_requests_than_get_each"] = round(
            at_200["anchor_get_each_requests"] / max(requests, 1), 1)
        checks["no-op pass at 200 objects: at most 2 requests, nothing re-sent"] = \
            requests <= 2 and not any(k[0] != "GET" for k in at_200["noop_requests"])
    heal: dict[str, float] = {}
    for watch in (True, False):
        with tempfile.TemporaryDirectory(prefix="kube-bench-heal-") as scratch:
            latencies = sorted(_heal_latency(arguments.edits, watch, Path(scratch)))
        mode = "watch" if watch else "resync_4s"
        heal[f"{mode}_p50_s"] = round(statistics.median(latencies), 3)
        heal[f"{mode}_max_s"] = round(latencies[-1], 3)
    heal["watch_faster_at_p50"] = round(heal["resync_4s_p50_s"] / heal["watch_p50_s"], 1)
    checks["drift heal with the watch at least 3x faster than a 4 s resync (p50)"] = \
        heal["watch_faster_at_p50"] >= 3
    for size, row in results.items():
        row["noop_requests"] = {f"{m} {r}": n for (m, r), n in row["noop_requests"].items()}
        smallest = results[str(min(sizes))]
        checks[f"no-op pass at {size} objects within 10x (bare LIST + fixed pass cost)"] = \
            row["noop_pass_s"] <= 10 * (row["bare_list_s"] + smallest["noop_pass_s"])
    return finish({"passes": results, "drift_heal": heal}, checks)


if __name__ == "__main__":
    sys.exit(main())
