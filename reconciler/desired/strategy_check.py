"""Strategy checks: compile, import in the sandbox, run the strategy's tests there.

Code from the repository never runs in the daemon's process: ``compile`` only parses, and
the import and the tests run in ``python -I`` inside the sandbox (reconciler.sandbox): the
folder's ``.py`` files read-only, an empty environment, no view of the daemon, a timeout
that kills everything the check started. The import's report comes back over a pipe of its
own, bounded and validated; a check whose report is missing or malformed fails with a
finding, never with an exception. Without a sandbox nothing runs: SandboxUnavailable.

With ``sandbox: job`` each step runs in a Kubernetes Job instead (``use_jobs``, wired by
the composition root): the ``.py`` files travel in the Job's environment, the pod runs the
same step (``strategy_job``) and reports its outcome as the last line of its log, which is
validated here (``channel.remote_outcome``) before the same rules turn it into findings.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from reconciler.coderun import MAX_PAYLOAD_BYTES, MAX_REPORT_BYTES, CodeJob, CodeJobs
from reconciler.desired.documents import Strategy
from reconciler.desired.validate import Finding
from reconciler.durations import format_duration
from reconciler.sandbox import runner as sandbox
from reconciler.sandbox.channel import Malformed, remote_outcome, strategy_report
from reconciler.source.snapshot import Entry, PathError, Snapshot, resolve

_WORKER = Path(__file__).with_name("strategy_worker.py")
JOB_MODULE = "reconciler.desired.strategy_job"  # what a check Job's container runs
_PARALLEL_CHECKS = 4
_ADDRESS_SPACE_BYTES = 4 << 30
_TEST_OUTPUT_LINES = 200
_PAYLOAD_MARGIN = 4096  # of a Job's payload, for the step's own fields beside the files
# Unpacked .py sources a check Job may carry: gzip rarely wins more than 8x on source.
MAX_SOURCE_BYTES = 8 * MAX_PAYLOAD_BYTES
_REMOTE_LINE_CHARS = 64 * 1024  # a channel line in a Job's report (the import's: 64 KiB)

_jobs: CodeJobs | None = None


def use_jobs(jobs: CodeJobs | None) -> None:
    """Where checks run in mode ``job`` (the composition root sets it with the mode)."""
    global _jobs
    _jobs = jobs


@dataclass(frozen=True, slots=True)
class Step:
    """One sandboxed run of a check: the module's import, or its tests (paths relative to
    the folder). The same step runs here or, in mode ``job``, in a pod."""

    kind: Literal["import", "tests"]
    module: str
    entrypoint: str
    tests: tuple[str, ...]
    timeout: float


def check_key(strategy: Strategy, entries: Mapping[str, Entry]) -> str:
    """Same key, same outcome: the spec's check fields, every .py file, the interpreter, the
    sandbox mode (a module that passed unsandboxed may fail in the sandbox), and in mode
    ``job`` where the Jobs run (their image)."""
    python_files = sorted((path, entry.oid) for path, entry in entries.items()
                          if path.endswith(".py"))
    mode = sandbox.current().mode
    material = [strategy.source, strategy.entrypoint, list(strategy.tests),
                strategy.check_timeout_seconds, python_files, sys.version, mode,
                _jobs.identity() if mode == "job" and _jobs is not None else None]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def _run(argv: list[str], scratch: Path, timeout: float, box: sandbox.Sandbox, *,
         report: bool, keep_lines: int = 1) -> sandbox.Outcome:
    launch = sandbox.Launch(
        tuple(argv), scratch, sandbox.Limits(cpu_seconds=math.ceil(timeout) + 1,
                                             address_space_bytes=_ADDRESS_SPACE_BYTES),
        read_only=(scratch, _WORKER),
        environment={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        channel="fd" if report else "stdout", max_line_bytes=64 * 1024 if report else 1 << 20)
    return box.run(launch, timeout, keep_lines)


def run_step(step: Step, scratch: Path, box: sandbox.Sandbox) -> sandbox.Outcome:
    """``step`` on the files under ``scratch``, in ``box``: here, or inside a check pod."""
    if step.kind == "import":
        return _run([sys.executable, "-I", "-B", str(_WORKER), str(scratch), step.module,
                     step.entrypoint, sandbox.REPORT_FD_PLACEHOLDER], scratch, step.timeout,
                    box, report=True)
    return _run([sys.executable, "-I", "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "--rootdir", str(scratch), *step.tests], scratch, step.timeout, box,
                report=False, keep_lines=_TEST_OUTPUT_LINES)


def _python_entries(snapshot: Snapshot) -> Iterator[tuple[str, Entry]]:
    entries = snapshot.entries()
    for path in entries:
        if not path.endswith(".py"):
            continue
        try:
            yield path, resolve(entries, path)
        except PathError:
            continue


def _archive(snapshot: Snapshot) -> str | None:
    """The folder's .py files as base64 of a gzipped tar: what a check Job needs; None when
    they are too large to travel (told by their sizes, before any is read)."""
    python = sorted(_python_entries(snapshot))
    if sum(entry.size for _, entry in python) > MAX_SOURCE_BYTES:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, entry in python:
            content = snapshot.read(entry)
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o444
            archive.addfile(info, io.BytesIO(content))
    return base64.b64encode(buffer.getvalue()).decode()


def _run_in_job(jobs: CodeJobs, strategy: Strategy, step: Step, archive: str
                ) -> sandbox.Outcome:
    """The step in a Job; its report, validated, as a local run's Outcome (no log tail:
    that stays in the pod). A missing or malformed report is a contract violation."""
    payload = json.dumps({"step": asdict(step), "files": archive})
    report = jobs.run(CodeJob("strategy-check", strategy.name, JOB_MODULE, payload,
                              step.timeout))
    if report.timed_out:
        return sandbox.Outcome(True, -9, [], "", None)
    try:
        remote = remote_outcome(report.line, max_bytes=MAX_REPORT_BYTES,
                                max_lines=_TEST_OUTPUT_LINES, max_line_chars=_REMOTE_LINE_CHARS)
    except Malformed as error:
        return sandbox.Outcome(False, -1, [], "", f"its Job left no valid report ({error})")
    return sandbox.Outcome(remote.timed_out, remote.returncode, list(remote.lines), "",
                           remote.violation)


Runner = Callable[[Step], sandbox.Outcome]


@contextlib.contextmanager
def _runner(strategy: Strategy, snapshot: Snapshot) -> Iterator[Runner | str]:
    """Runs steps of this strategy's check where the mode says; in mode ``job``, a reason
    instead when its files are too large to travel in a Job."""
    jobs = _jobs
    if sandbox.current().mode == "job" and jobs is not None:
        archive = _archive(snapshot)
        if archive is None or len(archive) + _PAYLOAD_MARGIN > MAX_PAYLOAD_BYTES:
            shown = f"{len(archive) // 1024} KiB" if archive is not None else \
                f"over {MAX_SOURCE_BYTES // 1024} KiB unpacked"
            yield (f"the folder's .py files take {shown} in a check Job, which carries at "
                   f"most {(MAX_PAYLOAD_BYTES - _PAYLOAD_MARGIN) // 1024} KiB")
            return
        yield lambda step: _run_in_job(jobs, strategy, step, archive)
        return
    with tempfile.TemporaryDirectory(prefix="reconciler-strategy-") as scratch_name:
        scratch = Path(scratch_name)
        _materialize(snapshot, scratch)
        yield lambda step: run_step(step, scratch, sandbox.current())


def _materialize(snapshot: Snapshot, scratch: Path) -> None:
    """The folder's .py files in the scratch dir, streamed (a large unreferenced file is
    copied in chunks, never held in memory)."""
    for path, entry in _python_entries(snapshot):
        destination = scratch / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        snapshot.copy_to(entry, destination)


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
    with _runner(strategy, snapshot) as runner:
        if isinstance(runner, str):
            return [Finding(entry.path, runner, "strategy-check-size")]
        run = runner(Step("import", entry.path, strategy.entrypoint or "", (), timeout))
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
            return _run_tests(strategy, entries, runner, timeout)
    return []


def _run_tests(strategy: Strategy, entries: Mapping[str, Entry], runner: Runner,
               timeout: float) -> list[Finding]:
    test_paths = [resolve(entries, test).path for test in strategy.tests]
    run = runner(Step("tests", test_paths[0], "", tuple(test_paths), timeout))
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
    if sandbox.current().mode != "job":
        sandbox.current().require()
    elif _jobs is None:
        raise sandbox.SandboxUnavailable(
            "settings say 'sandbox: job' but name no cluster to run checks in: add a "
            "'sandboxJob' block (namespace, image) to reconciler.yaml")
    with ThreadPoolExecutor(max_workers=_PARALLEL_CHECKS) as pool:
        results = pool.map(lambda s: check_strategy(s, snapshot), strategies)
        return {strategy.name: findings for strategy, findings in zip(strategies, results,
                                                                      strict=True)}
