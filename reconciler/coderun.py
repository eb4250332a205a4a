"""Repository code run somewhere other than this host: the seam between what needs it run
(strategy checks, in ``desired/``) and an adapter that runs it (``kube/``, as a batch/v1
Job). Neither side imports the other; the composition root (``app``) connects them.

In a cluster the daemon's pod runs with seccomp ``RuntimeDefault`` and no capabilities,
which forbid the user namespaces bubblewrap needs; there the code runs in a pod of its own
instead (settings ``sandbox: job``). The adapter only moves bytes: a request in, the last
line of the pod's log out, bounded. Whoever asked validates that line through the same
channel rules as the local sandbox (``reconciler.sandbox.channel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

PAYLOAD_ENVIRONMENT_VARIABLE = "RECONCILER_CODE_JOB"
MAX_PAYLOAD_BYTES = 512 * 1024  # an environment variable in a Job: well under etcd's 1.5 MiB
MAX_REPORT_BYTES = 1 << 20  # the report line the pod's log may end with


@dataclass(frozen=True, slots=True)
class CodeJob:
    """One run of repository code. The container runs ``python -m <module>`` and finds
    ``payload`` (JSON, at most MAX_PAYLOAD_BYTES) in $RECONCILER_CODE_JOB; its report is
    the last line it writes to stdout. ``timeout_seconds`` bounds the code itself; the
    adapter adds the time a pod takes to be scheduled and start."""

    purpose: str  # what kind of code: a label value and the start of the Job's name
    subject: str  # what it checks (a strategy's name): a label value, part of the name
    module: str
    payload: str
    timeout_seconds: float
    network: bool = False


@dataclass(frozen=True, slots=True)
class CodeJobReport:
    """How the run ended. ``line`` is the last line of the log, None without one; at most
    MAX_REPORT_BYTES + 1 bytes, so that the reader can tell an oversized line."""

    line: str | None
    timed_out: bool


class CodeJobs(Protocol):
    def identity(self) -> str:
        """What a run's outcome depends on besides the code (the image): remembered
        results are keyed by it."""
        ...

    def run(self, job: CodeJob) -> CodeJobReport:
        """Run it to the end or its timeout, then remove it. A run that could not start
        (the API refused, the pod was never scheduled) or was stopped raises a
        ReconcilerError: a host problem, never a finding about the code."""
        ...
