"""Strategy checks: compile, import in the sandbox, run the strategy's tests there.

Code from the repository never runs in the daemon's process: ``compile`` only parses, and
the import and the tests run in ``python -I`` inside the sandbox (reconciler.sandbox): the
folder's ``.py`` files read-only, an empty environment, no view of the daemon, a timeout
that kills everything the check started. The import's report comes back over a pipe of its
own, bounded and validated; a check whose report is missing or malformed fails with a
finding, never with an exception. Without a sandbox nothing runs: SandboxUnavailable.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reconciler.desired.documents import Strategy
from reconciler.desired.validate import Finding
from reconciler.durations import format_duration
from reconciler.sandbox import runner as sandbox
from reconciler.sandbox.channel import Malformed, strategy_report
from reconciler.source.snapshot import Entry, PathError, Snapshot, resolve

_WORKER = Path(__file__).with_name("strategy_worker.py")
_PARALLEL_CHECKS = 4
_ADDRESS_SPACE_BYTES = 4 << 30
_TEST_OUTPUT_LINES = 200


def check_key(strategy: Strategy, entries: Mapping[str, Entry]) -> str:
    """Same key, same outcome: the spec's check fields, every .py file, the interpreter, the
    sandbox mode (a module that passed unsandboxed may fail in the sandbox)."""
    python_files = sorted((path, entry.oid) for path, entry in entries.items()
                          if path.endswith(".py"))
    material = [strategy.source, strategy.entrypoint, list(strategy.tests),
                strategy.check_timeout_seconds, python_files, sys.version,
                sandbox.current().mode]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def _run(argv: list[str], scratch: Path, timeout: float, *, report: bool,
         keep_lines: int = 1) -> sandbox.Outcome:
    launch = sandbox.Launch(
        tuple(argv), scratch, sandbox.Limits(cpu_seconds=math.ceil(timeout) + 1,
                                             address_space_bytes=_ADDRESS_SPACE_BYTES),
        read_only=(scratch, _WORKER),
        environment={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        channel="fd" if report else "stdout", max_line_bytes=64 * 1024 if report else 1 << 20)
    return sandbox.current().run(launch, timeout, keep_lines)


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
        run = _run([sys.executable, "-I", "-B", str(_WORKER), str(scratch), entry.path,
                    strategy.entrypoint or "", sandbox.REPORT_FD_PLACEHOLDER], scratch,
                   timeout, report=True)
        if run.timed_out:
            return [Finding(entry.path, f"importing the module did not finish within "
                            f"{format_duration(timeout)}", "strategy-import-timeout")]
        if run.violation is not None:
            return [Finding(entry.path, f"importing the module was stopped: {run.violation}",
                            "strategy-import-output")]
        if not run.lines:
            return [Finding(entry.path, f"importing the module ended the process (exit code "
                            f"{run.returncode}) before it finished", "strategy-import-exit")]
        try:
            report = strategy_report(run.lines[-1])
        except Malformed as error:
            return [Finding(entry.path, f"importing the module left a malformed report "
                            f"(exit code {run.returncode}): {error}", "strategy-import-output")]
        if report.outcome == "entrypoint":
            return [Finding(strategy.origin.file, f"{entry.path}: {report.detail}",
                            "strategy-entrypoint", strategy.origin.document,
                            ("spec", "entrypoint"))]
        if report.outcome != "ok":
            rule = "strategy-import-exit" if report.outcome == "exit" else "strategy-import"
            return [Finding(entry.path, report.detail, rule, line=report.line)]
        if strategy.tests:
            return _run_tests(strategy, entries, scratch, timeout)
    return []


def _run_tests(strategy: Strategy, entries: Mapping[str, Entry], scratch: Path,
               timeout: float) -> list[Finding]:
    test_paths = [resolve(entries, test).path for test in strategy.tests]
    run = _run([sys.executable, "-I", "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "--rootdir", str(scratch), *test_paths], scratch, timeout, report=False,
               keep_lines=_TEST_OUTPUT_LINES)
    if run.timed_out:
        return [Finding(test_paths[0], f"the strategy's tests did not finish within "
                        f"{format_duration(timeout)}", "strategy-tests")]
    if run.violation is not None:
        return [Finding(test_paths[0], f"the strategy's tests were stopped: {run.violation}",
                        "strategy-tests")]
    if run.returncode == 0:
        return []
    lines = [line for line in run.lines if line.strip()]
    summary = lines[-1] if lines else f"exit code {run.returncode}"
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in lines
              if line.startswith("FAILED ")]
    detail = f"; failing: {', '.join(failed[:5])}" if failed else ""
    return [Finding(test_paths[0], f"the strategy's tests failed ({summary}){detail}",
                    "strategy-tests")]


def check_strategies(strategies: list[Strategy], snapshot: Snapshot) -> dict[str, list[Finding]]:
    """Findings by strategy name; checks run side by side (each is a sandbox).
    SandboxUnavailable, before anything runs, when repository code cannot be sandboxed:
    no finding is made (and so none is cached) for a host problem."""
    if not strategies:
        return {}
    sandbox.current().require()
    with ThreadPoolExecutor(max_workers=_PARALLEL_CHECKS) as pool:
        results = pool.map(lambda s: check_strategy(s, snapshot), strategies)
        return {strategy.name: findings for strategy, findings in zip(strategies, results,
                                                                      strict=True)}
