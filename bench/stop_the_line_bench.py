"""How fast a running check is ended: by ``reconciler suspend``, and by a newer commit.

The daemon follows a local repository; a Config carries a health check with a 60 s soak.
Suspend: while a soak runs, ``reconciler suspend --all`` is run (a fresh CLI process, as
an operator would); measured from before the command starts, and from the suspension's
journal entry, to the journal closing the soak's health intent as ``interrupted``; then
``resume --all`` (the next pass starts the soak again). Supersede: while a soak runs, a
commit changes the Config again; measured from ``git commit`` returning to the journal's
``superseded`` event.
Anchor, measured in the same run: commit-to-delivered latency of a change without a soak.

Targets (issue 15): a journaled suspension and a newer commit each end the check within
1 s (max over the rounds).
Run: ``.venv/bin/python bench/stop_the_line_bench.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from report import finish

from reconciler.journal import Journal

ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@invalid"}
TARGET = ("apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: edge}\n"
          "spec: {local: {root: edge}}\n")
CONFIG = ("apiVersion: reconciler/v1\nkind: Config\nmetadata: {{name: knobs}}\nspec:\n"
          "  targets: [edge]\n  deliver: {{path: knobs.json}}\n  data: {{generation: {n}}}\n"
          "{health}")
SOAK = "  health: {command: [python3, -c, 'pass'], timeout: 5s, soak: 60s}\n"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True)


def commit(repo: Path, generation: int, soak: bool) -> None:
    (repo / "desired-state" / "knobs.yaml").write_text(
        CONFIG.format(n=generation, health=SOAK if soak else ""))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"generation {generation}")


def count(journal_path: Path, action: str, phase: str) -> int:
    journal = Journal(journal_path, readonly=True)
    try:
        return sum(1 for e in journal.events(action=action, limit=10_000) if e.phase == phase)
    finally:
        journal.close()


def latest(journal_path: Path, action: str, phase: str) -> float:
    """When the newest ``action`` event of ``phase`` was journaled (epoch seconds)."""
    journal = Journal(journal_path, readonly=True)
    try:
        return max(e.at for e in journal.events(action=action, limit=10_000)
                   if e.phase == phase)
    finally:
        journal.close()


def until(condition: Callable[[], bool], what: str, timeout: float = 60) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - started


def delivered(fleet: Path, generation: int) -> bool:
    try:
        return json.loads((fleet / "edge" / "knobs.json").read_text())["generation"] == generation
    except (OSError, ValueError, KeyError):
        return False


def cli(config: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "reconciler", *args, "--config", str(config)],
                   env=ENV, check=True, capture_output=True, timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stop-the-line-") as scratch_name:
        scratch = Path(scratch_name)
        repo = scratch / "repo"
        (repo / "desired-state").mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        (repo / "desired-state" / "target.yaml").write_text(TARGET)
        generation = 1
        commit(repo, generation, soak=False)
        config = scratch / "reconciler.yaml"
        config.write_text(f"repo: {repo}\nstateDir: {scratch / 'state'}\nlisten: ''\n"
                          "resync: 1h\n")
        journal = scratch / "state" / "journal.db"
        fleet = scratch / "state" / "fleet"
        daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config",
                                   str(config)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=ENV)
        anchor, suspend, journaled, supersede = [], [], [], []
        try:
            until(lambda: delivered(fleet, 1), "the first convergence")
            for _ in range(args.rounds):  # anchor: a change without a soak
                generation += 1
                commit(repo, generation, soak=False)
                anchor.append(until(lambda g=generation: delivered(fleet, g), "delivery"))
            for _ in range(args.rounds):
                generation += 1
                soaks = count(journal, "health", "intent")
                commit(repo, generation, soak=True)
                until(lambda s=soaks: count(journal, "health", "intent") > s, "the soak")
                ended = count(journal, "superseded", "info")
                generation += 1
                commit(repo, generation, soak=True)
                supersede.append(until(lambda e=ended: count(journal, "superseded", "info")
                                       > e, "the supersede"))
            for _ in range(args.rounds):
                until(lambda g=generation: delivered(fleet, g), "the last commit delivered")
                soaks = count(journal, "health", "intent")
                interrupted = count(journal, "health", "interrupted")
                until(lambda s=soaks: count(journal, "health", "intent") >= s
                      and count(journal, "health", "intent") > count(journal, "health", "done")
                      + count(journal, "health", "interrupted")
                      + count(journal, "health", "failed"), "a soak under way")
                started = time.monotonic()
                cli(config, "suspend", "--all", "--reason", "bench")
                until(lambda i=interrupted: count(journal, "health", "interrupted") > i,
                      "the suspension")
                suspend.append(time.monotonic() - started)
                journaled.append(latest(journal, "health", "interrupted")
                                 - latest(journal, "suspend", "done"))
                cli(config, "resume", "--all")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
    results = {name: {"p50_s": round(statistics.median(values), 3),
                      "max_s": round(max(values), 3)}
               for name, values in (("anchor_commit_to_delivered", anchor),
                                    ("suspend_cli_to_check_ended", suspend),
                                    ("suspend_journaled_to_check_ended", journaled),
                                    ("commit_to_superseded", supersede))}
    anchor_p50 = statistics.median(anchor)
    results["ratios_to_anchor_p50"] = {
        "suspend": round(statistics.median(suspend) / anchor_p50, 1),
        "supersede": round(statistics.median(supersede) / anchor_p50, 1)}
    # The daemon's part (issue 15: "honoured within a second") starts when the request is
    # journaled; the CLI's own start-up (a Python process) comes before it.
    return finish(results, {"suspend ends the check within 1 s of being journaled":
                            max(journaled) <= 1.0,
                            "a newer commit ends the check within 1 s": max(supersede) <= 1.0})


if __name__ == "__main__":
    sys.exit(main())
