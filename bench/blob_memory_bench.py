"""Peak memory of ``apply`` with a large unreferenced blob in the desired-state folder.

Issue 12, defect 11: a 150 MB ``.py`` file nobody references raised ``apply``'s memory
tenfold, because blobs were read whole. Each measured ``apply`` runs in its own process
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process itself; the subprocesses it
starts are not counted) after the same warm-up: a first ``apply`` of a small fleet, then
one commit that adds either a small ``.py`` file (the anchor) or the 150 MB one.

Two runs: the anchor, and the blob. (What kept the blob in memory: the strategy check's
scratch copy, now streamed, and libgit2's in-process fetch, now in a child process.)

Target: blob / anchor <= 1.2. The blob lives on disk only during the run (a temp dir,
removed at the end). Run: ``.venv/bin/python bench/blob_memory_bench.py [--mib 150]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from report import finish

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@invalid",
       "PYTHONPATH": str(REPO_ROOT)}
TARGET = ("apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: edge}\n"
          "spec: {local: {root: edge}}\n")
STRATEGY = ("apiVersion: reconciler/v1\nkind: Strategy\nmetadata: {name: app}\nspec:\n"
            "  source: app.py\n  targets: [edge]\n  deliver: {path: app.py}\n")

# The measured process: ``apply`` through the CLI's own entry, its peak RSS written to a
# file.
MEASURED = """
import resource, sys
from pathlib import Path
from reconciler.cli import main
code = main(sys.argv[2:])
Path(sys.argv[1]).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.exit(code)
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True)


def write_blob(path: Path, mib: int) -> None:
    """A Python file of comment lines of random hex: it compresses about as code does."""
    with open(path, "w") as stream:
        for _ in range(mib):
            hexed = os.urandom(1 << 19).hex()
            stream.write("".join(f"# {hexed[i:i + 76]}\n" for i in range(0, len(hexed), 76)))


def peak_kib(scratch: Path, name: str, blob_mib: int) -> int:
    """Warm up a fresh fleet, commit the addition, return the measured apply's peak RSS."""
    repo, state = scratch / name / "repo", scratch / name / "state"
    folder = repo / "desired-state"
    folder.mkdir(parents=True)
    (folder / "target.yaml").write_text(TARGET)
    (folder / "app.yaml").write_text(STRATEGY)
    (folder / "app.py").write_text("OK = 1\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "fleet")
    settings = scratch / name / "reconciler.yaml"
    settings.write_text(f"repo: {repo}\nstateDir: {state}\nlisten: ''\n")
    apply = [sys.executable, "-m", "reconciler", "apply", "--config", str(settings)]
    subprocess.run(apply, env=ENV, check=True, capture_output=True)
    if blob_mib:
        write_blob(folder / "unreferenced.py", blob_mib)
    else:
        (folder / "unreferenced.py").write_text("UNUSED = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "an unreferenced module")
    (folder / "unreferenced.py").unlink()  # the working copy is not what the daemon reads
    out = scratch / name / "peak"
    done = subprocess.run([sys.executable, "-c", MEASURED, str(out), "apply", "--config",
                           str(settings)], env=ENV,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"apply failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    peak = int(out.read_text())
    shutil.rmtree(scratch / name)  # the blob and its copies leave the disk at once
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=150, help="size of the blob")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blob-bench-") as scratch_name:
        scratch = Path(scratch_name)
        anchor = peak_kib(scratch, "anchor", 0)
        blob = peak_kib(scratch, "blob", args.mib)
    results = {"blob_mib": args.mib, "anchor_peak_mib": round(anchor / 1024, 1),
               "blob_peak_mib": round(blob / 1024, 1), "ratio": round(blob / anchor, 2)}
    return finish(results, {"apply with the blob <= 1.2x without it": blob / anchor <= 1.2})


if __name__ == "__main__":
    sys.exit(main())
