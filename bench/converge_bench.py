"""Commit-to-converged latency, and what an idle daemon costs.

Latency: the daemon follows a local repository (watch trigger); 20 commits each change a
Config; the time from `git commit` returning to the delivered file holding the new content.
Anchor, measured in the same run: the same with polling at Flux's default interval (1m),
over --poll-commits commits (each waits up to a minute).
Idle: the daemon's CPU time and RSS over --idle-seconds once converged, next to a bare
Python interpreter's RSS.

Targets: watch p50 <= 250 ms; idle CPU <= 0.5 %, RSS <= 100 MB.
Run: ``.venv/bin/python bench/converge_bench.py [--poll-commits 3] [--idle-seconds 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import finish

ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@invalid"}
TARGET = ("apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: edge}\n"
          "spec: {local: {root: edge}}\n")
RANDOM = random.Random(20261122)
CONFIG = ("apiVersion: reconciler/v1\nkind: Config\nmetadata: {{name: knobs}}\nspec:\n"
          "  targets: [edge]\n  deliver: {{path: knobs.json}}\n  data: {{generation: {n}}}\n")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True)


def commit(repo: Path, generation: int) -> None:
    (repo / "desired-state" / "knobs.yaml").write_text(CONFIG.format(n=generation))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"generation {generation}")


def delivered(fleet: Path, generation: int) -> bool:
    try:
        return json.loads((fleet / "edge" / "knobs.json").read_text())["generation"] == generation
    except (OSError, ValueError, KeyError):
        return False


def measure(settings: str, scratch: Path, repo: Path, commits: int, start: int,
            idle_seconds: float = 0, spread: float = 0.3) -> tuple[list[float], dict[str, float]]:
    """Latencies of ``commits`` commits, each made a random 0..``spread`` s after the last
    convergence (with polling: anywhere in the interval, as commits arrive in practice)."""
    config = scratch / f"reconciler-{start}.yaml"
    config.write_text(settings)
    daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config",
                               str(config)], stdout=subprocess.DEVNULL, env=ENV)
    fleet = scratch / "state" / "fleet"
    latencies, idle = [], {}
    try:
        deadline = time.monotonic() + 60
        while not delivered(fleet, start - 1):
            assert time.monotonic() < deadline, "the daemon did not converge"
            time.sleep(0.01)
        for generation in range(start, start + commits):
            time.sleep(RANDOM.uniform(0, spread))
            commit(repo, generation)
            committed = time.monotonic()
            while not delivered(fleet, generation):
                time.sleep(0.002)
            latencies.append(time.monotonic() - committed)
        if idle_seconds:
            time.sleep(2)
            before = cpu_seconds(daemon.pid)
            time.sleep(idle_seconds)
            idle = {"cpu_percent": 100 * (cpu_seconds(daemon.pid) - before) / idle_seconds,
                    "rss_mb": rss_mb(daemon.pid)}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    return latencies, idle


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def bare_python_rss_mb() -> float:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    time.sleep(0.5)
    try:
        return rss_mb(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--poll-commits", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="reconciler-converge-"))
    try:
        repo = scratch / "repo"
        (repo / "desired-state").mkdir(parents=True)
        (repo / "desired-state" / "targets.yaml").write_text(TARGET)
        git(repo, "init", "-q", "-b", "main")
        commit(repo, 0)
        base = f"stateDir: {scratch / 'state'}\nlisten: ''\n"
        watch, idle = measure(f"repo: {repo}\n{base}", scratch, repo, args.commits, 1,
                              args.idle_seconds)
        poll, _ = measure(f"repo: file://{repo}\ninterval: 1m\n{base}", scratch, repo,
                          args.poll_commits, args.commits + 1, spread=60)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = {
        "watch_p50_ms": round(statistics.median(watch) * 1000, 1),
        "watch_p95_ms": round(percentile(watch, 0.95) * 1000, 1),
        "poll_1m_p50_ms": round(statistics.median(poll) * 1000, 1),
        "poll_1m_p95_ms": round(percentile(poll, 0.95) * 1000, 1),
        "poll_over_watch_p50": round(statistics.median(poll) / statistics.median(watch), 1),
        "idle_cpu_percent": round(idle["cpu_percent"], 3),
        "idle_rss_mb": round(idle["rss_mb"], 1),
        "bare_python_rss_mb": round(bare_python_rss_mb(), 1),
    }
    checks = {"watch p50 <= 250 ms": results["watch_p50_ms"] <= 250,
              "idle CPU <= 0.5 %": results["idle_cpu_percent"] <= 0.5,
              "idle RSS <= 100 MB": results["idle_rss_mb"] <= 100}
    return finish(results, checks)


if __name__ == "__main__":
    sys.exit(main())
