"""Plan speed on a desired-state tree of 2,000 documents, against a bare parse.

The anchor, measured in the same run on the same files: ruamel.yaml's C loader
(``YAML(typ="safe", pure=False).load_all``) parsing every YAML file, nothing else.

- warm no-op plan, as the daemon makes it every pass (fetch, load through the cache it
  keeps in memory, read the journal's history, observe an in-sync fleet with 20 canonical
  pointers, each store object verified on use, plan): target at most 30 ms and at least
  20x faster than the bare parse;
- the same as ``reconciler plan`` makes it (a new process reads its caches from disk):
  reported, no target;
- verifying the 20 store objects on use in that warm pass: at most 2 ms;
- cold plan (empty state dir: mirror clone, parse, schema checks, strategy check):
  target at most 1.5x the bare parse.

Run: ``.venv/bin/python bench/plan_bench.py [--documents N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import finish
from ruamel.yaml import YAML

from reconciler.app import Wiring
from reconciler.journal import Journal
from reconciler.passes import plan_pass
from reconciler.plan.planner import History
from reconciler.settings import load_settings

DOCS_PER_FILE = 2
MODELS = 20
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@invalid"}

TARGETS = """apiVersion: reconciler/v1
kind: Target
metadata: {name: staging}
spec:
  local: {root: staging}
---
apiVersion: reconciler/v1
kind: Target
metadata: {name: production}
spec:
  local: {root: production}
  after: staging
  soak: 30m
"""

STRATEGY = """apiVersion: reconciler/v1
kind: Strategy
metadata: {name: router}
spec:
  source: strategies/router.py
  entrypoint: route
  targets: [staging]
  deliver: {path: strategies/router.py}
"""

CONFIG = """apiVersion: reconciler/v1
kind: Config
metadata:
  name: chute-{i}
  labels: {{team: miner-ops, tier: t{tier}}}
spec:
  targets: [staging]
  format: json
  deliver: {{path: config/chute-{i}.json, mode: "0644"}}
  data:
    thresholds:
      min_margin_usd_per_hour: {margin}
      scale_up_utilization: 0.8
      scale_down_utilization: 0.2
      max_instances_per_chute: {cap}
    budgets:
      max_wall_time_ms: 60000
      max_provider_calls: 10
      max_estimated_cost_usd: 25.0
"""


MODEL = """apiVersion: reconciler/v1
kind: Model
metadata: {{name: policy-{i}}}
spec:
  targets: [staging]
  artifact: {{uri: models/policy-{i}.pt, sha256: {digest}}}
  pointer: {{path: models/canonical-{i}.pt}}
"""


def make_tree(repo: Path, documents: int) -> list[Path]:
    folder = repo / "desired-state"
    (folder / "strategies").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "targets.yaml").write_text(TARGETS)
    (folder / "router.yaml").write_text(STRATEGY)
    (folder / "strategies" / "router.py").write_text("def route(request):\n    return 0\n")
    for i in range(MODELS):
        weights = f"policy {i} weights\n".encode() * 4096
        (folder / "models" / f"policy-{i}.pt").write_bytes(weights)
        (folder / f"model-{i}.yaml").write_text(MODEL.format(
            i=i, digest=hashlib.sha256(weights).hexdigest()))
    configs = documents - 3 - MODELS
    for start in range(0, configs, DOCS_PER_FILE):
        body = "---\n".join(CONFIG.format(i=i, tier=i % 4, margin=0.5 + i % 7 / 10, cap=1 + i % 8)
                            for i in range(start, min(start + DOCS_PER_FILE, configs)))
        (folder / f"chutes-{start // DOCS_PER_FILE:04d}.yaml").write_text(body)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "fleet"], cwd=repo, check=True, env=GIT_ENV)
    return sorted(folder.rglob("*.yaml"))


def bare_parse_seconds(files: list[Path]) -> tuple[float, int]:
    contents = [path.read_bytes() for path in files]
    started = time.perf_counter()
    loader = YAML(typ="safe", pure=False)
    count = sum(len(list(loader.load_all(content))) for content in contents)
    return time.perf_counter() - started, count


def materialize(planned: object) -> None:
    """Bring the fleet in line with the plan, so the next plan is a no-op: files written,
    pointers flipped to store objects."""
    desired = planned.desired  # type: ignore[attr-defined]
    wiring = planned.wiring  # type: ignore[attr-defined]
    old = time.time() - 60  # settled files: the digest cache may keep them
    for action in planned.plan.changes:  # type: ignore[attr-defined]
        target = desired.targets[action.target]
        root = wiring.fleet(target).root_of(target)
        if action.kind == "Model":
            model = desired.models[action.name]
            digest = wiring.store.put(desired.read_file(model.artifact.uri))
            os.utime(wiring.store.location(digest), (old, old))
            destination = root / model.pointer.path
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(wiring.store.location(digest), destination)
            continue
        obj = (desired.configs.get(action.name) if action.kind == "Config"
               else desired.strategies.get(action.name))
        destination = root / obj.deliver.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(desired.read_content(obj))
        os.utime(destination, (old, old))


def history(settings: object) -> History:
    """What ``reconciler plan`` reads: the journal, opened read-only for one plan."""
    journal = Journal(settings.journal_path)  # type: ignore[attr-defined]
    try:
        return journal.history(time.time())
    finally:
        journal.close()


def verification_seconds(wiring: Wiring, digests: list[str]) -> float:
    started = time.perf_counter()
    for digest in digests:
        assert wiring.store.verified(digest) is not None
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    try:
        repo = scratch / "repo"
        repo.mkdir()
        files = make_tree(repo, args.documents)
        settings_file = scratch / "reconciler.yaml"
        settings_file.write_text(f"repo: {repo}\nstateDir: {scratch / 'state'}\n")
        settings = load_settings(settings_file, {})

        bare = min(bare_parse_seconds(files)[0] for _ in range(3))
        _, parsed = bare_parse_seconds(files)

        started = time.perf_counter()
        cold_pass = plan_pass(Wiring(settings), history(settings), time.time())
        cold = time.perf_counter() - started
        materialize(cold_pass)
        daemon = Wiring(settings)  # what the daemon keeps for its life, the journal too
        journal = Journal(settings.journal_path)
        plan_pass(daemon, journal.history(time.time()), time.time())  # settles the caches
        plan_pass(daemon, journal.history(time.time()), time.time())
        models = [m.artifact.sha256 for m in cold_pass.desired.models.values()]

        warm_times, verify_times, command_times = [], [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            warm_pass = plan_pass(daemon, journal.history(time.time()), time.time())
            warm_times.append(time.perf_counter() - started)
            assert warm_pass.plan.in_sync, "the benchmark fleet must be in sync"
            verify_times.append(verification_seconds(daemon, models))
            started = time.perf_counter()
            command_pass = plan_pass(Wiring(settings), history(settings), time.time())
            command_times.append(time.perf_counter() - started)
            assert command_pass.plan.in_sync
        journal.close()
        warm = statistics.median(warm_times)
        verify = statistics.median(verify_times)
        command = statistics.median(command_times)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    results = {
        "documents": parsed,
        "files": len(files),
        "bare_c_parse_ms": round(bare * 1000, 1),
        "cold_plan_ms": round(cold * 1000, 1),
        "warm_noop_plan_ms": round(warm * 1000, 1),
        "warm_speedup_vs_bare_parse": round(bare / warm, 1),
        "plan_command_noop_ms": round(command * 1000, 1),
        "store_verification_of_20_models_ms": round(verify * 1000, 2),
        "cold_over_bare_parse": round(cold / bare, 2),
    }
    checks = {
        "warm no-op plan <= 30 ms": warm <= 0.030,
        "warm no-op plan >= 20x faster than bare parse": bare / warm >= 20,
        "store verification on use with 20 models <= 2 ms": verify <= 0.002,
        "cold plan <= 1.5x bare parse": cold / bare <= 1.5,
    }
    return finish(results, checks)


if __name__ == "__main__":
    sys.exit(main())
