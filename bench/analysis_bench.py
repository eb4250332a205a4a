"""Analysis during the soak: how fast a failing metric starts the rollback, and what ten
running analysis checks cost the daemon.

A real Prometheus server (Debian's ``prometheus``) scrapes, every 200 ms, an exporter whose
error rate the bench drives.

- Reaction: one local target, one strategy with a Prometheus check every --interval. While
  the analysis runs, the bench flips the exported error rate above the bar and times the
  flip to the journal's rollback intent (the rollback starting), over --flips changes.
  Anchor, measured in the same run: the same flip to the moment Prometheus itself answers
  the new value (what scraping costs before any analysis can see it).
  Target: at most one interval + 1 s.
- Idle CPU: ``reconciler run`` as a subprocess while ten checks run (five Prometheus queries
  and five log files, every --check-interval), its CPU time over --idle-seconds; next to
  the same daemon converged without checks (the anchor).
  Target: <= 1 % of one core.

Run: ``.venv/bin/python bench/analysis_bench.py [--flips 5] [--interval 1] [--idle-seconds 20]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from report import finish

from reconciler.app import Wiring
from reconciler.journal import Journal
from reconciler.passes import run_pass
from reconciler.settings import load_settings
from tests.prometheus import Prometheus, exporter, prometheus

ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@invalid"}
SERIES = 'app_error_ratio{target="edge"}'
TARGET = ("apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: edge}\n"
          "spec: {local: {root: edge}}\n")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True)


def strategy(checks: str) -> str:
    return f"""apiVersion: reconciler/v1
kind: Strategy
metadata: {{name: app}}
spec:
  source: app.py
  targets: [edge]
  deliver: {{path: app/app.py}}
  restart: {{command: [python3, -c, "pass"]}}
{checks}"""


def repository(scratch: Path, checks: str) -> Path:
    repo = scratch / "repo"
    (repo / "desired-state").mkdir(parents=True)
    (repo / "desired-state" / "target.yaml").write_text(TARGET)
    (repo / "desired-state" / "app.py").write_text("VERSION = 0\n")
    (repo / "desired-state" / "app.yaml").write_text(strategy(checks))
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "first")
    return repo


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def rollback_intents(journal_path: Path) -> list[float]:
    with contextlib.closing(sqlite3.connect(journal_path)) as db:
        return [at for (at,) in db.execute("SELECT at FROM events WHERE action = 'rollback' "
                                           "AND phase = 'intent' ORDER BY id")]


def analysis_started(journal_path: Path, count: int) -> bool:
    with contextlib.suppress(sqlite3.Error), \
            contextlib.closing(sqlite3.connect(journal_path)) as db:
        found = db.execute("SELECT COUNT(*) FROM events WHERE action = 'analysis' AND "
                           "phase = 'intent'").fetchone()[0]
        return int(found) >= count
    return False


def wait_until(condition: object, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def reaction(scratch: Path, flips: int, interval: float) -> dict[str, object]:
    rate = {"value": 0.01}
    scratch.mkdir(parents=True)
    with exporter(lambda: {SERIES: rate["value"]}) as address, \
            prometheus(scratch, [address]) as server:
        checks = (f"  analysis:\n    - {{name: error-rate, interval: {int(interval * 1000)}ms, "
                  f"count: 1000, prometheus: {{query: '{SERIES}', max: 0.05}}}}\n")
        repo = repository(scratch, checks)
        settings_file = scratch / "reconciler.yaml"
        settings_file.write_text(f"repo: {repo}\nstateDir: {scratch / 'state'}\nlisten: ''\n"
                                 f"analysis:\n  prometheus: {{url: '{server.url}'}}\n")
        settings = load_settings(settings_file, {})
        journal = Journal(settings.journal_path)
        latencies, anchors = [], []
        try:
            server.wait_for(SERIES, 0.01)
            for flip in range(flips + 1):  # the first pass delivers version 0, then v1...
                rate["value"] = 0.01
                server.wait_for(SERIES, 0.01)
                if flip:
                    (repo / "desired-state" / "app.py").write_text(f"VERSION = {flip}\n")
                    commit(repo, f"version {flip}")
                passing = threading.Thread(target=run_pass, args=(
                    Wiring(settings), journal, threading.Event()))
                passing.start()
                wait_until(lambda count=flip + 1: analysis_started(settings.journal_path,
                                                                   count))
                # Good measurements first, then a flip at any phase of the interval.
                time.sleep(interval * random.uniform(1.0, 2.0))
                before = len(rollback_intents(settings.journal_path))
                flipped = time.time()
                rate["value"] = 0.3
                anchors.append(seen_by_prometheus(server, flipped))
                wait_until(lambda seen=before: len(rollback_intents(settings.journal_path))
                           > seen)
                latencies.append(rollback_intents(settings.journal_path)[-1] - flipped)
                passing.join()
        finally:
            journal.close()
    return {"interval_s": interval,
            "flip_to_rollback_s": [round(s, 3) for s in latencies],
            "flip_to_rollback_max_s": round(max(latencies), 3),
            "flip_to_prometheus_median_s": round(statistics.median(anchors), 3),
            "ratio_to_anchor": round(statistics.median(latencies)
                                     / max(statistics.median(anchors), 1e-3), 2)}


def seen_by_prometheus(server: Prometheus, since: float) -> float:
    while True:
        result = server.query(SERIES)
        if result and float(result[0]["value"][1]) == 0.3:  # type: ignore[index]
            return time.time() - since
        time.sleep(0.005)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_cpu(scratch: Path, checks: str, prometheus_url: str, seconds: float,
               analyses: int) -> float:
    """The daemon's CPU (percent of one core) over ``seconds`` once ``analyses`` analysis
    intents are journaled (0: once the first pass is done)."""
    scratch.mkdir(parents=True)
    repo = repository(scratch, checks)
    (scratch / "logs").mkdir()
    settings_file = scratch / "reconciler.yaml"
    settings_file.write_text(
        f"repo: {repo}\nstateDir: {scratch / 'state'}\nlisten: ''\nresync: 1h\n"
        f"analysis:\n  prometheus: {{url: '{prometheus_url}'}}\n  logRoots: ['{scratch}/logs']\n")
    journal_path = scratch / "state" / "journal.db"
    with open(scratch / "daemon.log", "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config",
                                   str(settings_file)], stdout=log, stderr=subprocess.STDOUT,
                                  env=ENV)
        try:
            if analyses:
                wait_until(lambda: analysis_started(journal_path, analyses))
            else:
                wait_until(lambda: journal_path.exists() and passes_done(journal_path))
            time.sleep(2)  # past the first pass's own work
            before = cpu_seconds(daemon.pid)
            time.sleep(seconds)
            return 100 * (cpu_seconds(daemon.pid) - before) / seconds
        finally:
            daemon.terminate()
            daemon.wait(60)


def passes_done(journal_path: Path) -> bool:
    with contextlib.suppress(sqlite3.Error), \
            contextlib.closing(sqlite3.connect(journal_path)) as db:
        return bool(db.execute("SELECT COUNT(*) FROM passes WHERE finished IS NOT NULL")
                    .fetchone()[0])
    return False


def ten_checks(interval: float) -> str:
    every = f"{int(interval * 1000)}ms"
    lines = ["  analysis:"]
    for index in range(5):
        lines.append(f"    - {{name: query-{index}, interval: {every}, count: 100000, "
                     f"prometheus: {{query: 'sum({SERIES})', max: 0.05}}}}")
    for index in range(5):
        lines.append(f"    - {{name: log-{index}, interval: {every}, count: 100000, "
                     f"log: {{path: 'LOGS/app-{index}.log', pattern: 'ERROR', maxCount: 0}}}}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flips", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--check-interval", type=float, default=1.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="analysis-bench-"))
    try:
        results: dict[str, object] = {"reaction": reaction(scratch / "reaction", args.flips,
                                                           args.interval)}
        with exporter(lambda: {SERIES: 0.01}) as address, \
                prometheus(scratch, [address]) as server:
            server.wait_for(SERIES, 0.01)
            idle = daemon_cpu(scratch / "idle", "", server.url, args.idle_seconds, 0)
            busy_scratch = scratch / "busy"
            busy = daemon_cpu(busy_scratch, ten_checks(args.check_interval).replace(
                "LOGS", str(busy_scratch / "logs")), server.url, args.idle_seconds, 1)
        results["idle_cpu"] = {"check_interval_s": args.check_interval,
                               "without_analysis_percent": round(idle, 3),
                               "ten_checks_percent": round(busy, 3),
                               "ratio_to_anchor": round(busy / max(idle, 0.01), 2)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reaction_result = results["reaction"]
    assert isinstance(reaction_result, dict)
    return finish(results, {
        "failing metric to rollback <= interval + 1 s":
            reaction_result["flip_to_rollback_max_s"] <= args.interval + 1.0,
        "daemon CPU with ten analyses <= 1 %":
            results["idle_cpu"]["ten_checks_percent"] <= 1.0,  # type: ignore[index]
    })


if __name__ == "__main__":
    sys.exit(main())
