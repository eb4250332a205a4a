"""Promote-to-pull-request and merge-to-flip latency.

A daemon follows a local repository (watch trigger) whose Model sits behind a metrics gate;
a fake GitHub API on 127.0.0.1 takes the pull requests. Per round: the gate is run first
(``reconciler gauntlet --artifact``, as a pipeline's CI would), then timed: ``reconciler
promote`` from start to the pull request opened (the gate a remembered lookup), and, after
a fast-forward merge, the time until the pointer names the new artifact (the daemon's gate
finds the remembered verdict).
Anchors, measured in the same run: ``git push`` of a branch with the git CLI (for promote),
and a Config commit to its delivery on the same daemon (for the flip).

Targets: merge-to-flip p50 <= 1 s (the issue's goal); promote p50 <= 5 s.
Run: ``.venv/bin/python bench/promote_bench.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import finish

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integration.forge_servers import fake_forge

ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@invalid",
       "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
GOOD = "import json; print(json.dumps({'accuracy': 0.95}))"
DOCUMENTS = {
    "targets.yaml": "apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: edge}\n"
                    "spec: {local: {root: edge}}\n",
    "gate.yaml": json.dumps({"apiVersion": "reconciler/v1", "kind": "Gauntlet",
                             "metadata": {"name": "gate"},
                             "spec": {"metrics": {"command": ["python3", "-c", GOOD],
                                                  "runs": 1, "rules": [
                                                      {"metric": "accuracy", "op": ">=",
                                                       "value": 0.9}]},
                                      "timeout": "1m"}}),
}
MODEL = ("apiVersion: reconciler/v1\nkind: Model\nmetadata: {{name: policy}}\nspec:\n"
         "  targets: [edge]\n  # the canonical weights; promote changes the next line only\n"
         "  artifact: {{uri: models/policy.bin, sha256: {digest}, format: file}}\n"
         "  pointer: {{path: models/current.bin}}\n  gauntlet: gate\n")
CONFIG = ("apiVersion: reconciler/v1\nkind: Config\nmetadata: {{name: knobs}}\nspec:\n"
          "  targets: [edge]\n  deliver: {{path: knobs.json}}\n  data: {{generation: {n}}}\n")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args, "--config", str(config)],
                          env=ENV, capture_output=True, text=True, timeout=300, check=False)


def wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.002)


def reads(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="reconciler-promote-"))
    promote, flip, push, deliver = [], [], [], []
    try:
        repo, artifacts = scratch / "repo", scratch / "artifacts"
        folder = repo / "desired-state"
        (folder / "models").mkdir(parents=True)
        artifacts.mkdir()
        for name, text in DOCUMENTS.items():
            (folder / name).write_text(text)
        (folder / "models" / "policy.bin").write_bytes(b"weights-0")
        (folder / "model.yaml").write_text(MODEL.format(
            digest=hashlib.sha256(b"weights-0").hexdigest()))
        (folder / "knobs.yaml").write_text(CONFIG.format(n=0))
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "a gated model")
        pointer = scratch / "state" / "fleet" / "edge" / "models" / "current.bin"
        knobs = scratch / "state" / "fleet" / "edge" / "knobs.json"
        with fake_forge("github") as forge:
            config = scratch / "reconciler.yaml"
            config.write_text(f"repo: {repo}\nstateDir: {scratch / 'state'}\nlisten: ''\n"
                              f"artifacts: {{fileRoots: [{artifacts}]}}\n"
                              + forge.settings(scratch))
            daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config",
                                       str(config)], stdout=subprocess.DEVNULL, env=ENV)
            try:
                wait_for(lambda: reads(pointer, b"weights-0"), 120)
                for round_ in range(1, args.rounds + 1):
                    data = f"weights-{round_}".encode()
                    artifact = artifacts / f"policy-{round_}.bin"
                    artifact.write_bytes(data)
                    gated = cli(config, "gauntlet", "policy", "--artifact", artifact.as_uri())
                    assert gated.returncode == 0, gated.stdout + gated.stderr
                    started = time.monotonic()
                    done = cli(config, "promote", "policy", "--artifact", artifact.as_uri())
                    promote.append(time.monotonic() - started)
                    assert done.returncode == 0 and "opened" in done.stdout, done.stdout
                    branch = forge.pulls[-1]["head"]
                    git(repo, "merge", "-q", "--ff-only", branch)
                    merged = time.monotonic()
                    wait_for(lambda data=data: reads(pointer, data))  # type: ignore[misc]
                    flip.append(time.monotonic() - merged)

                    git(repo, "branch", f"anchor-{round_}", "main")
                    started = time.monotonic()
                    git(repo, "push", "-q", str(repo), f"anchor-{round_}:pushed-{round_}")
                    push.append(time.monotonic() - started)
                    (folder / "knobs.yaml").write_text(CONFIG.format(n=round_))
                    git(repo, "commit", "-qam", f"knobs {round_}")
                    committed = time.monotonic()
                    wait_for(lambda n=round_: knobs.exists() and  # type: ignore[misc]
                             json.loads(knobs.read_text() or "{}").get("generation") == n)
                    deliver.append(time.monotonic() - committed)
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(60)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = {
        "promote_to_pull_request_p50_ms": round(statistics.median(promote) * 1000, 1),
        "promote_to_pull_request_max_ms": round(max(promote) * 1000, 1),
        "git_push_anchor_p50_ms": round(statistics.median(push) * 1000, 1),
        "promote_over_git_push": round(statistics.median(promote) / statistics.median(push), 1),
        "merge_to_flip_p50_ms": round(statistics.median(flip) * 1000, 1),
        "merge_to_flip_max_ms": round(max(flip) * 1000, 1),
        "config_commit_to_delivered_p50_ms": round(statistics.median(deliver) * 1000, 1),
        "flip_over_config_delivery": round(statistics.median(flip) / statistics.median(deliver),
                                           2),
        "rounds": args.rounds,
    }
    checks = {"merge-to-flip p50 <= 1 s": results["merge_to_flip_p50_ms"] <= 1000,
              "promote p50 <= 5 s": results["promote_to_pull_request_p50_ms"] <= 5000}
    return finish(results, checks)


if __name__ == "__main__":
    sys.exit(main())
