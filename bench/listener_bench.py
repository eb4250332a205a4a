"""Probe latency while clients hold idle connections to the daemon's listener.

The daemon runs as a subprocess on a one-target repository, listening on 127.0.0.1. Anchor,
measured in the same run: --probes GET /healthz one after the other with no other
connection open. Then --idle connections are opened and left silent (the attack of issue
12: they used to spend the daemon's descriptors), with a probe every 100 of them, and the
same probes run again with all of them open. Each probe
is a fresh connection, as a kubelet or a load balancer makes them.

Target: p99 under 1 s with 2,000 idle connections open; the daemon alive, holding a bounded
number of descriptors.
Run: ``.venv/bin/python bench/listener_bench.py [--idle 2000] [--probes 200]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from report import finish

ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@invalid"}
TARGET = ("apiVersion: reconciler/v1\nkind: Target\nmetadata: {name: edge}\n"
          "spec: {local: {root: edge}}\n")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def probes(address: str, count: int) -> list[float]:
    """Seconds per GET /healthz; a probe that fails counts as 10 s (its timeout)."""
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as response:
                response.read()
                ok = response.status == 200
        except OSError:
            ok = False
        seconds.append(time.perf_counter() - started if ok else 10.0)
    return seconds


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values) * 1000, 2),
            "p99_ms": round(percentile(values, 0.99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="listener-bench-"))
    repo = scratch / "repo"
    (repo / "desired-state").mkdir(parents=True)
    (repo / "desired-state" / "target.yaml").write_text(TARGET)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, env=ENV, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, env=ENV, check=True)
    subprocess.run(["git", "commit", "-qm", "one target"], cwd=repo, env=ENV, check=True)
    settings = scratch / "reconciler.yaml"
    settings.write_text(f"repo: {repo}\nstateDir: {scratch / 'state'}\n"
                        "listen: 127.0.0.1:0\nresync: 1h\n")
    log = open(scratch / "daemon.log", "wb")  # noqa: SIM115 - closed in finally
    # The daemon keeps the soft descriptor limit this process was given (often 1,024);
    # only this process raises its own, to hold the idle connections.
    daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config",
                               str(settings)], stdout=log, stderr=subprocess.STDOUT, env=ENV)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    idle: list[socket.socket] = []
    try:
        state = scratch / "state" / "daemon.json"
        deadline = time.monotonic() + 60
        address = None
        while time.monotonic() < deadline and address is None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                address = json.loads(state.read_text())["listen"]
            time.sleep(0.05)
        if address is None:
            print((scratch / "daemon.log").read_text(), file=sys.stderr)
            return 1
        host, port = address.rsplit(":", 1)
        baseline = probes(address, args.probes)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 1024), hard))
        opening = time.monotonic() + 60
        flood: list[float] = []  # a probe every 100 connections while they pile up
        while len(idle) < args.idle and time.monotonic() < opening:
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection((host, int(port)), timeout=2))
                if len(idle) % 100 == 0:
                    flood += probes(address, 1)
        loaded = probes(address, args.probes)
        descriptors = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        alive = daemon.poll() is None
    finally:
        for connection in idle:
            connection.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        daemon.terminate()
        daemon.wait(60)
        log.close()
    log_bytes = (scratch / "daemon.log").stat().st_size
    shutil.rmtree(scratch, ignore_errors=True)
    results = {"idle_connections": len(idle), "probes": args.probes,
               "none_open": summary(baseline), "idle_open": summary(loaded),
               "while_opening": summary(flood),
               "p99_ratio": round(percentile(loaded, 0.99) / percentile(baseline, 0.99), 2),
               "daemon_descriptors": descriptors, "daemon_log_bytes": log_bytes}
    return finish(results, {
        f"p99 under 1 s with {len(idle)} idle connections": percentile(loaded, 0.99) < 1.0,
        "every probe while they were opened under 1 s": max(flood) < 1.0,
        "every idle connection opened": len(idle) == args.idle,
        "the daemon stayed up": alive,
        "the daemon's descriptors stayed bounded (< 600)": descriptors < 600,
    })


if __name__ == "__main__":
    sys.exit(main())
