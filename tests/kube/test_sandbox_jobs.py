"""``sandbox: job``: strategy checks as hardened batch/v1 Jobs on the emulated API server
(the manifest, the report through the channel rules, timeouts, stop), and the Job's
container command for real, as a subprocess."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.coderun import PAYLOAD_ENVIRONMENT_VARIABLE, CodeJob
from reconciler.desired import strategy_check
from reconciler.errors import StalledError
from reconciler.kube.api import Clusters
from reconciler.kube.codejobs import CodeJobs
from reconciler.sandbox import runner
from reconciler.sandbox.channel import remote_outcome, strategy_report
from tests.conftest import REPO_ROOT
from tests.kube.world import KubeWorld, strategy_doc

SANDBOX_NAMESPACE = "reconciler-sandbox"
IMAGE = "registry.example/reconciler:1"


@pytest.fixture(autouse=True)
def _local_sandbox_afterwards() -> Iterator[None]:
    """The mode is process-wide: later tests in this process get the default back."""
    yield
    runner.configure("bwrap")
    strategy_check.use_jobs(None)


def _report(*lines: str, returncode: int = 0) -> str:
    return json.dumps({"timedOut": False, "returncode": returncode, "lines": list(lines),
                       "violation": None}) + "\n"


OK = _report(json.dumps({"outcome": "ok"}))


def _setup(world: KubeWorld, *, check_timeout: str = "5s") -> None:
    world.basic()
    doc = json.loads(strategy_doc(["cluster-a"]))
    doc["spec"]["checkTimeout"] = check_timeout
    world.write("strategies/gepetto.yaml", json.dumps(doc))
    world.emulator.namespaces.add(SANDBOX_NAMESPACE)
    world.write_settings(sandbox="job", sandboxJob={
        "namespace": SANDBOX_NAMESPACE, "context": "kmock", "image": IMAGE,
        "cpu": "500m", "memory": "256Mi", "startTimeout": "1s"})
    world.commit()


def _jobs_left(world: KubeWorld) -> list[Any]:
    return [k for k in world.emulator.objects if k[0].plural == "jobs"
            and not world.emulator.objects[k].deleted]


def test_a_check_runs_in_a_hardened_job_and_its_ok_is_remembered(world: KubeWorld) -> None:
    _setup(world)
    jobs: list[dict[str, Any]] = []

    def behave(job: dict[str, Any]) -> tuple[str, str]:
        jobs.append(job)
        return "Complete", "some noise the pod printed\n" + OK

    world.emulator.job_behavior = behave
    outcome = world.apply()
    assert outcome.result == "changed", outcome.message
    [job] = jobs
    assert job["metadata"]["namespace"] == SANDBOX_NAMESPACE
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["reconciler.dev/code"] == "strategy-check"
    assert labels["reconciler.dev/network"] == "none"
    assert labels["reconciler.dev/subject"] == "gepetto"
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 5 + 1 + 30
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "reconciler.desired.strategy_job"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["resources"]["limits"]["memory"] == "256Mi"
    assert container["resources"]["limits"]["cpu"] == "500m"
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) == {PAYLOAD_ENVIRONMENT_VARIABLE, "PYTHONUNBUFFERED", "HOME", "TMPDIR"}
    request = json.loads(env[PAYLOAD_ENVIRONMENT_VARIABLE])
    assert request["step"]["kind"] == "import"
    assert request["step"]["module"] == "strategies/gepetto.py"
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(request["files"]))) as archive:
        assert archive.getnames() == ["strategies/gepetto.py"], "only the .py files travel"
    assert _jobs_left(world) == [], "the Job is deleted once its report is read"
    world.write("config/settings.yaml", world.folder.joinpath("config/settings.yaml")
                .read_text().replace("0.5", "0.6"))
    world.commit()
    assert world.apply().result == "changed"
    assert world.emulator.counters.by_kind[("POST", "jobs")] == 1, "the check is remembered"


def test_an_import_error_reaches_the_diagnostic_with_its_line(world: KubeWorld) -> None:
    _setup(world)
    raised = {"outcome": "raise", "line": 3,
              "detail": "importing the module raised NameError: name 'x' is not defined"}
    world.emulator.job_behavior = lambda job: ("Complete", _report(json.dumps(raised)))
    outcome = world.apply()
    assert outcome.result == "invalid"
    assert ("strategies/gepetto.py:3:1: importing the module raised NameError: name 'x' is "
            "not defined [strategy-import]") in outcome.message
    assert world.configmap("gepetto-code") is None, "nothing delivered"


def test_validate_through_the_cli_runs_the_check_as_a_job(world: KubeWorld) -> None:
    """The real CLI, as a pull request's check runs it: the settings' mode reaches it."""
    _setup(world)
    raised = {"outcome": "raise", "line": 2, "detail": "importing the module raised OSError"}
    jobs: list[dict[str, Any]] = []

    def behave(job: dict[str, Any]) -> tuple[str, str]:
        jobs.append(job)
        return "Complete", _report(json.dumps(raised))

    world.emulator.job_behavior = behave
    done = subprocess.run([sys.executable, "-m", "reconciler", "validate", "--rev", "main",
                           "--config", str(world.config)],
                          capture_output=True, text=True, cwd=world.root, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "strategies/gepetto.py:2:1: importing the module raised OSError " \
        "[strategy-import]" in done.stdout + done.stderr
    assert len(jobs) == 1 and _jobs_left(world) == []


@pytest.mark.parametrize(("log", "expected"), [
    ("Traceback (most recent call last):\nMemoryError\n",
     "its Job left no valid report (not a JSON object: 'MemoryError')"),
    ("", "its Job left no valid report (the pod wrote no report)"),
    (_report(json.dumps({"outcome": "ok"})).replace('"violation"', '"extra": 1, "violation"'),
     "its Job left no valid report (report has unknown fields extra)"),
    (json.dumps({"timedOut": False, "returncode": 0, "lines": ["x" * (1 << 20)],
                 "violation": None}) + "\n",
     "its Job left no valid report (its report is longer than 1048576 bytes)"),
    (_report('{"outcome": "ok", "games": -1}'),
     "left a malformed report (exit code 0): report has unknown fields games"),
])
def test_a_malformed_or_oversized_report_fails_the_check(world: KubeWorld, log: str,
                                                         expected: str) -> None:
    _setup(world)
    world.emulator.job_behavior = lambda job: ("Complete", log)
    outcome = world.apply()
    assert outcome.result == "invalid", outcome.message
    assert expected in outcome.message
    assert _jobs_left(world) == []


def test_a_job_that_runs_past_its_timeout_is_deleted(world: KubeWorld) -> None:
    _setup(world, check_timeout="1s")

    def hang_running(job: dict[str, Any]) -> tuple[str, str]:
        name = job["metadata"]["name"]
        pod = {"metadata": {"name": f"{name}-pod", "namespace": SANDBOX_NAMESPACE,
                            "labels": {"job-name": name}},
               "spec": job["spec"]["template"]["spec"], "status": {"phase": "Running"}}
        # Started, and never ends (put from another thread: this one holds the server's lock).
        threading.Timer(0.05, world.emulator.put, ("pods", pod)).start()
        return "Hang", ""

    world.emulator.job_behavior = hang_running
    outcome = world.apply()
    assert outcome.result == "invalid"
    assert "importing the module did not finish within 1s" in outcome.message
    assert world.emulator.counters.by_kind[("DELETE", "jobs")] == 1
    assert _jobs_left(world) == []


def test_a_job_that_never_starts_stalls_the_pass_and_is_not_remembered(
        world: KubeWorld) -> None:
    _setup(world, check_timeout="1s")
    world.emulator.job_behavior = lambda job: ("Hang", "")
    outcome = world.apply()
    assert outcome.result == "stalled", outcome.message
    assert "did not start within 1s (image, quota or scheduling)" in outcome.message
    assert _jobs_left(world) == []
    world.emulator.job_behavior = lambda job: ("Complete", OK)
    assert world.apply().result == "changed", "a host problem is not a remembered finding"


def test_a_stop_deletes_the_running_job(world: KubeWorld) -> None:
    _setup(world)
    settings = world.settings()
    assert settings.sandbox_job is not None
    stop = threading.Event()

    def stop_while_it_runs(job: dict[str, Any]) -> tuple[str, str]:
        threading.Timer(0.3, stop.set).start()
        return "Hang", ""

    world.emulator.job_behavior = stop_while_it_runs
    jobs = CodeJobs(Clusters(settings.kube), settings.sandbox_job, stop)
    with pytest.raises(StalledError, match="was stopped; the Job was deleted"):
        jobs.run(CodeJob("strategy-check", "gepetto", "reconciler.desired.strategy_job",
                         "{}", 30.0))
    assert world.emulator.counters.by_kind[("DELETE", "jobs")] == 1
    assert _jobs_left(world) == []


def test_the_tests_run_in_a_second_job_and_their_failures_reach_the_finding(
        world: KubeWorld) -> None:
    _setup(world)
    doc = json.loads(world.folder.joinpath("strategies/gepetto.yaml").read_text())
    doc["spec"]["tests"] = ["strategies/test_gepetto.py"]
    world.write("strategies/gepetto.yaml", json.dumps(doc))
    world.write("strategies/test_gepetto.py", "def test_it():\n    assert False\n")
    world.commit()
    steps: list[dict[str, Any]] = []

    def behave(job: dict[str, Any]) -> tuple[str, str]:
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        step = json.loads(env[0]["value"])["step"]
        steps.append(step)
        if step["kind"] == "import":
            return "Complete", OK
        return "Complete", _report("F", "FAILED strategies/test_gepetto.py::test_it - assert",
                                   "1 failed in 0.01s", returncode=1)

    world.emulator.job_behavior = behave
    outcome = world.apply()
    assert outcome.result == "invalid"
    assert [step["kind"] for step in steps] == ["import", "tests"]
    assert steps[1]["tests"] == ["strategies/test_gepetto.py"]
    assert ("the strategy's tests failed (1 failed in 0.01s); failing: "
            "strategies/test_gepetto.py::test_it") in outcome.message
    assert _jobs_left(world) == []


def test_a_folder_too_large_for_a_job_fails_the_check_without_one(world: KubeWorld) -> None:
    _setup(world)
    noise = base64.b64encode(os.urandom(450 * 1024)).decode()  # incompressible
    world.write("strategies/blob.py", f"BLOB = {noise!r}\n")
    world.commit()
    outcome = world.apply()
    assert outcome.result == "invalid"
    assert "KiB in a check Job, which carries at most 508 KiB [strategy-check-size]" \
        in outcome.message
    assert world.emulator.counters.by_kind.get(("POST", "jobs"), 0) == 0


def test_only_code_that_declares_network_escapes_the_policy(world: KubeWorld) -> None:
    _setup(world)
    settings = world.settings()
    assert settings.sandbox_job is not None
    jobs = CodeJobs(Clusters(settings.kube), settings.sandbox_job, threading.Event())
    labels = [jobs.manifest("x", CodeJob("metrics", "m", "mod", "{}", 1.0, network=network))
              ["spec"]["template"]["metadata"]["labels"]["reconciler.dev/network"]
              for network in (False, True)]
    assert labels == ["none", "allowed"]


def test_without_a_sandbox_job_block_the_setting_is_refused(world: KubeWorld) -> None:
    world.write_settings(sandbox="job")
    with pytest.raises(Exception, match="missing required field 'sandboxJob'"):
        world.settings()


def test_code_that_would_run_in_the_daemons_pod_is_refused(tmp_path: Path) -> None:
    """Metrics commands and local gauntlets start through the sandbox: in mode ``job``
    it starts nothing (they end in a GauntletError with this message)."""
    launch = runner.Launch(("/bin/true",), tmp_path, runner.Limits(cpu_seconds=1,
                                                                   address_space_bytes=None))
    with pytest.raises(runner.SandboxUnavailable, match="runs only in Kubernetes Jobs"):
        runner.Sandbox("job").start(launch)


# The container command for real.

def _archive(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def _entry(tmp_path: Path, step: dict[str, Any], files: dict[str, str]) -> list[str]:
    """The Job's container command as a subprocess: its log's lines."""
    request = {"step": {"entrypoint": "", "tests": [], "timeout": 30.0, **step},
               "files": _archive(files)}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT),
           "TMPDIR": str(tmp_path), PAYLOAD_ENVIRONMENT_VARIABLE: json.dumps(request)}
    done = subprocess.run([sys.executable, "-m", "reconciler.desired.strategy_job"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


STRATEGY = '''"""A strategy."""
print('{"outcome": "ok"}')
import helpers
def select(candidates):
    return helpers.first(candidates)
'''
TESTS = '''from strategy import select
def test_select():
    assert select([3, 1]) == 3
def test_fails():
    assert select([]) == 1
'''


def test_the_job_entry_point_imports_and_reports_one_validated_line(tmp_path: Path) -> None:
    files = {"s/strategy.py": STRATEGY, "s/helpers.py": "def first(c):\n    return c[0]\n",
             "s/test_strategy.py": TESTS}
    [line] = _entry(tmp_path, {"kind": "import", "module": "s/strategy.py",
                               "entrypoint": "select"}, files)
    outcome = remote_outcome(line, max_bytes=1 << 20, max_lines=200, max_line_chars=65536)
    assert (outcome.timed_out, outcome.returncode, outcome.violation) == (False, 0, None)
    assert strategy_report(outcome.lines[-1]).outcome == "ok", "its print stayed in the pod"

    files["s/helpers.py"] = "def first(c):\n    return c[0]\nraise KeyError('nope')\n"
    [line] = _entry(tmp_path, {"kind": "import", "module": "s/strategy.py"}, files)
    outcome = remote_outcome(line, max_bytes=1 << 20, max_lines=200, max_line_chars=65536)
    report = strategy_report(outcome.lines[-1])
    assert (report.outcome, report.line) == ("raise", 3), "the strategy's own line"
    assert "KeyError: 'nope'" in report.detail

    files["s/helpers.py"] = "def first(c):\n    return c[0]\n"
    [line] = _entry(tmp_path, {"kind": "tests", "module": "s/test_strategy.py",
                               "tests": ["s/test_strategy.py"]}, files)
    outcome = remote_outcome(line, max_bytes=1 << 20, max_lines=200, max_line_chars=65536)
    assert outcome.returncode == 1
    assert any(entry.startswith("FAILED s/test_strategy.py::test_fails")
               for entry in outcome.lines), outcome.lines
    assert "1 failed, 1 passed" in outcome.lines[-1]


def test_the_job_entry_point_refuses_an_archive_that_escapes(tmp_path: Path) -> None:
    request = {"step": {"kind": "import", "module": "x.py", "entrypoint": "", "tests": [],
                        "timeout": 5.0}, "files": _archive({"../x.py": "print(1)\n"})}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT),
           "TMPDIR": str(tmp_path), PAYLOAD_ENVIRONMENT_VARIABLE: json.dumps(request)}
    done = subprocess.run([sys.executable, "-m", "reconciler.desired.strategy_job"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
                          check=False)
    assert done.returncode != 0 and done.stdout == ""
    assert "unexpected archive member '../x.py'" in done.stderr
    assert not (tmp_path.parent / "x.py").exists()
