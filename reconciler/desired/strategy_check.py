"""Strategy checks: compile, import in an isolated subprocess, run the strategy's tests.

Code from the repository never runs in the daemon's process: ``compile`` only parses, and
the import runs in ``python -I`` in a scratch folder holding the folder's ``.py`` files,
with a minimal environment (no daemon secrets), a timeout that kills the whole process
group, and output captured to a file so a chatty module cannot fill memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reconciler.desired.documents import Strategy
from reconciler.desired.validate import Finding
from reconciler.durations import format_duration
from reconciler.processes import Finished, run_bounded
from reconciler.source.snapshot import Entry, PathError, Snapshot, resolve

_WORKER = Path(__file__).with_name("strategy_worker.py")
_PARALLEL_CHECKS = 4


def check_key(strategy: Strategy, entries: Mapping[str, Entry]) -> str:
    """Same key, same outcome: the spec's check fields, every .py file, the interpreter."""
    python_files = sorted((path, entry.oid) for path, entry in entries.items()
                          if path.endswith(".py"))
    material = [strategy.source, strategy.entrypoint, list(strategy.tests),
                strategy.check_timeout_seconds, python_files, sys.version]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def _run(argv: list[str], cwd: Path, timeout: float) -> Finished:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd),
                   "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                   "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    # kill_leftovers: helpers a module forked during its import must not outlive the check.
    return run_bounded(argv, cwd, environment, timeout, kill_leftovers=True)


def _materialize(snapshot: Snapshot, scratch: Path) -> None:
    entries = snapshot.entries()
    for path in entries:
        if not path.endswith(".py"):
            continue
        try:
            entry = resolve(entries, path)
        except PathError:
            continue
        destination = scratch / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(snapshot.read(entry))


def check_strategy(strategy: Strategy, snapshot: Snapshot) -> list[Finding]:
    """Findings for one strategy (empty when it compiles, imports and passes its tests)."""
    entries = snapshot.entries()
    try:
        entry = resolve(entries, strategy.source)
    except PathError:
        return []  # already reported by the cross-reference checks
    try:
        compile(snapshot.read(entry), entry.path, "exec", dont_inherit=True)
    except SyntaxError as error:
        return [Finding(entry.path, f"syntax error: {error.msg}", "strategy-syntax",
                        line=error.lineno or 1, col=error.offset or 1)]
    except ValueError as error:
        return [Finding(entry.path, f"cannot compile: {error}", "strategy-syntax")]
    timeout = strategy.check_timeout_seconds
    with tempfile.TemporaryDirectory(prefix="reconciler-strategy-") as scratch_name:
        scratch = Path(scratch_name)
        _materialize(snapshot, scratch)
        report_path = scratch / ".reconciler-import-report.json"
        run = _run([sys.executable, "-I", str(_WORKER), str(scratch), entry.path,
                    strategy.entrypoint or "", str(report_path)], scratch, timeout)
        if run.timed_out:
            return [Finding(entry.path, f"importing the module did not finish within "
                            f"{format_duration(timeout)}", "strategy-import-timeout")]
        if not report_path.exists():
            return [Finding(entry.path, f"importing the module ended the process (exit code "
                            f"{run.returncode}) before it finished", "strategy-import-exit")]
        report = json.loads(report_path.read_text())
        if report["outcome"] == "entrypoint":
            return [Finding(strategy.origin.file, f"{entry.path}: {report['detail']}",
                            "strategy-entrypoint", strategy.origin.document,
                            ("spec", "entrypoint"))]
        if report["outcome"] != "ok":
            rule = "strategy-import-exit" if report["outcome"] == "exit" else "strategy-import"
            return [Finding(entry.path, report["detail"], rule, line=report["line"])]
        if strategy.tests:
            return _run_tests(strategy, entries, scratch, timeout)
    return []


def _run_tests(strategy: Strategy, entries: Mapping[str, Entry], scratch: Path,
               timeout: float) -> list[Finding]:
    test_paths = [resolve(entries, test).path for test in strategy.tests]
    run = _run([sys.executable, "-I", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "--rootdir", str(scratch), *test_paths], scratch, timeout)
    if run.timed_out:
        return [Finding(test_paths[0], f"the strategy's tests did not finish within "
                        f"{format_duration(timeout)}", "strategy-tests")]
    if run.returncode == 0:
        return []
    lines = [line for line in run.output_tail.splitlines() if line.strip()]
    summary = lines[-1] if lines else f"exit code {run.returncode}"
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in lines
              if line.startswith("FAILED ")]
    detail = f"; failing: {', '.join(failed[:5])}" if failed else ""
    return [Finding(test_paths[0], f"the strategy's tests failed ({summary}){detail}",
                    "strategy-tests")]


def check_strategies(strategies: list[Strategy], snapshot: Snapshot) -> dict[str, list[Finding]]:
    """Findings by strategy name; checks run side by side (each is a subprocess)."""
    if not strategies:
        return {}
    with ThreadPoolExecutor(max_workers=_PARALLEL_CHECKS) as pool:
        results = pool.map(lambda s: check_strategy(s, snapshot), strategies)
        return {strategy.name: findings for strategy, findings in zip(strategies, results,
                                                                      strict=True)}
