"""A strategy check Job's container command: ``python -m reconciler.desired.strategy_job``.

With ``sandbox: job`` the daemon's pod cannot make namespaces, so the pod that runs this is
the sandbox: no service-account token, no capabilities, a read-only root, and no network
(a NetworkPolicy selects it by label). The request is in $RECONCILER_CODE_JOB: one step
of a check and the folder's ``.py`` files (base64 of a gzipped tar). The step runs as it
would on a host (``run_step``: the same argv, rlimits, report pipe and output bounds), in
a child whose stdout and stderr stay here; the only thing this writes to the pod's log is
the outcome, as one JSON line, which the daemon validates before it believes any of it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from reconciler.coderun import MAX_REPORT_BYTES, PAYLOAD_ENVIRONMENT_VARIABLE
from reconciler.desired.strategy_check import Step, run_step
from reconciler.sandbox.runner import Sandbox

_MAX_UNPACKED_BYTES = 32 << 20  # the .py files of one folder, unpacked
_TEST_LINE_CHARS = 2000  # of a line of test output: the findings quote the last and FAILED


def _step(request: dict[str, Any]) -> Step:
    fields = request["step"]
    if fields["kind"] not in ("import", "tests"):
        raise ValueError(f"unknown step {fields['kind']!r}")
    return Step(fields["kind"], str(fields["module"]), str(fields["entrypoint"]),
                tuple(str(test) for test in fields["tests"]), float(fields["timeout"]))


def _unpack(archive: str, scratch: Path) -> None:
    """Regular files at relative paths inside ``scratch``, nothing else, bounded."""
    total = 0
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(archive)), mode="r:gz") as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if not member.isfile() or path.is_absolute() or ".." in path.parts:
                raise ValueError(f"unexpected archive member {member.name!r}")
            total += member.size
            if total > _MAX_UNPACKED_BYTES:
                raise ValueError("the archive unpacks to more than 32 MiB")
            source = tar.extractfile(member)
            assert source is not None
            destination = scratch / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read())


def main() -> int:
    request = json.loads(os.environ[PAYLOAD_ENVIRONMENT_VARIABLE])
    step = _step(request)
    scratch = Path(tempfile.mkdtemp(prefix="strategy-"))
    _unpack(request["files"], scratch)
    # The pod is the sandbox; "none" applies the same rlimits and output bounds.
    outcome = run_step(step, scratch, Sandbox("none"))
    lines = (outcome.lines if step.kind == "import"  # the report: at most 64 KiB already
             else [line[:_TEST_LINE_CHARS] for line in outcome.lines])
    report = {"timedOut": outcome.timed_out, "returncode": outcome.returncode,
              "lines": lines, "violation": outcome.violation}
    encoded = json.dumps(report)
    while len(encoded.encode()) > MAX_REPORT_BYTES and report["lines"]:
        lines.pop(0)  # the oldest test output goes first: the summary is the last line
        encoded = json.dumps(report)
    sys.stdout.write(encoded + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
