"""What the sandbox adds, against the same work unsandboxed in the same run.

- a strategy check (the example's gepetto: compile, import in the worker, validated
  report) with ``sandbox: bwrap`` vs ``sandbox: none`` (the same code path, no namespaces);
- a gauntlet worker start: from launch to its first event (``start``, after torch is
  imported) inside the sandbox vs a plain subprocess with the same argv.

Runs alternate between the two sides. Each side's fastest run is the estimate checked
against the target (other load on a shared machine only ever adds time, and the work
measured is the same every run); medians are printed beside them. Target: at most 20 ms
added to each. Run: ``.venv/bin/python bench/sandbox_bench.py [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from report import finish

from reconciler.desired.cache import DesiredCache
from reconciler.desired.loader import load_desired
from reconciler.desired.strategy_check import check_strategy
from reconciler.sandbox import runner as sandbox
from reconciler.source.directory import DirectorySnapshot

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "desired-state"
TARGET_ADDED_SECONDS = 0.020


def alternate(repeat: int, sides: dict[str, Callable[[], float]]) \
        -> dict[str, tuple[float, float]]:
    """(fastest, median) seconds per side."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, measure in sides.items():
            samples[name].append(measure())
    return {name: (min(values), statistics.median(values))
            for name, values in samples.items()}


def strategy_check(mode: str) -> Callable[[], float]:
    snapshot = DirectorySnapshot(EXAMPLE, "desired-state/")
    desired = load_desired(snapshot, DesiredCache("bench"), run_strategy_checks=False)
    strategy = dataclasses.replace(desired.strategies["gepetto"], tests=())

    def measure() -> float:
        sandbox.configure(mode)
        started = time.perf_counter()
        findings = check_strategy(strategy, snapshot)
        elapsed = time.perf_counter() - started
        assert findings == [], findings
        return elapsed

    return measure


def worker_start(sandboxed: bool, job: Path) -> Callable[[], float]:
    argv = (sys.executable, "-m", "reconciler.gauntlet.worker", str(job))
    launch = sandbox.Launch(argv, job.parent,
                            sandbox.Limits(cpu_seconds=600, address_space_bytes=16 << 30,
                                           processes=1024, open_files=1024),
                            read_only=(job.parent,), package=True, max_line_bytes=1 << 20)

    def measure() -> float:
        started = time.perf_counter()
        if sandboxed:
            running = sandbox.Sandbox("bwrap").start(launch)
            try:
                lines: list[str] | None = []
                while lines == []:
                    lines = running.poll(5)
                elapsed = time.perf_counter() - started
                assert lines and json.loads(lines[0])["event"] == "start", lines
            finally:
                running.close()
            return elapsed
        process = subprocess.Popen(argv, cwd=job.parent, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert process.stdout is not None
        first = process.stdout.readline()
        elapsed = time.perf_counter() - started
        process.kill()
        process.wait()
        assert json.loads(first)["event"] == "start", first
        return elapsed

    return measure


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    sandbox.Sandbox().require()
    checks = alternate(args.repeat, {"none": strategy_check("none"),
                                     "bwrap": strategy_check("bwrap")})
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as scratch:
        job = Path(scratch) / "job.json"
        model = EXAMPLE / "models" / "connect4-policy-v2.pt"
        shutil_copy = Path(scratch) / model.name
        shutil_copy.write_bytes(model.read_bytes())
        job.write_text(json.dumps({"candidate": str(shutil_copy), "previous": None, "spec": {
            "device": "cpu", "match": {"game": "connect4", "opponents": [
                {"name": "random", "minScore": 0.5}]}}}))
        starts = alternate(max(3, args.repeat // 3),
                           {"plain": worker_start(False, job), "bwrap": worker_start(True, job)})
    check_added = checks["bwrap"][0] - checks["none"][0]
    start_added = starts["bwrap"][0] - starts["plain"][0]

    def ms(pair: tuple[float, float]) -> dict[str, float]:
        return {"fastest_ms": round(pair[0] * 1000, 1), "median_ms": round(pair[1] * 1000, 1)}

    results = {
        "strategy_check_unsandboxed": ms(checks["none"]),
        "strategy_check_sandboxed": ms(checks["bwrap"]),
        "strategy_check_added_ms": round(check_added * 1000, 1),
        "worker_start_unsandboxed": ms(starts["plain"]),
        "worker_start_sandboxed": ms(starts["bwrap"]),
        "worker_start_added_ms": round(start_added * 1000, 1),
        "load_average_1m": os.getloadavg()[0],
    }
    return finish(results, {
        f"strategy check: at most {TARGET_ADDED_SECONDS * 1000:.0f} ms added":
            check_added <= TARGET_ADDED_SECONDS,
        f"gauntlet worker start: at most {TARGET_ADDED_SECONDS * 1000:.0f} ms added":
            start_added <= TARGET_ADDED_SECONDS})


if __name__ == "__main__":
    sys.exit(main())
