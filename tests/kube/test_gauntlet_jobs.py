"""Gauntlets as batch/v1 Jobs: the manifest, the verdict from the pod's log, a failing
gate, a Job that outlives its timeout, and the worker's Job entry point for real."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.conftest import EXAMPLE, REPO_ROOT
from tests.kube.world import MODEL_V1, NAMESPACE, KubeWorld, model_doc

GATE = {"apiVersion": "reconciler/v1", "kind": "Gauntlet", "metadata": {"name": "gpu-gate"},
        "spec": {"runIn": "job", "timeout": "2s",
                 "match": {"game": "connect4", "games": 64,
                           "opponents": [{"name": "random", "minScore": 0.6}]}}}
RESULT = {"event": "result", "passed": True, "reason": "GatePassed", "gpuSeconds": 3.5,
          "opponents": [{"opponent": "random", "score": 0.93, "interval": [0.9, 0.96],
                         "games": 64, "minScore": 0.6, "passed": True,
                         "reason": "SprtAccept"}]}


def _setup(world: KubeWorld, tmp_path: Path) -> Path:
    world.basic()
    artifact = tmp_path / "published" / "policy.bin"
    artifact.parent.mkdir()
    artifact.write_bytes(MODEL_V1)
    world.write("gauntlets/gate.yaml", json.dumps(GATE))
    world.write("models/connect4.yaml", model_doc(["cluster-a"], f"file://{artifact}",
                                                  MODEL_V1, gauntlet="gpu-gate"))
    world.write_settings(gauntletJob={
        "namespace": NAMESPACE, "context": "kmock", "image": "registry.example/gauntlet:7",
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}]})
    world.commit()
    return artifact


def _pointer(world: KubeWorld) -> str | None:
    found = world.configmap("canonical-models")
    return None if found is None else str(json.loads(found["data"]["connect4-policy"])["sha256"])


def test_a_job_that_passes_flips_the_pointer(world: KubeWorld, tmp_path: Path) -> None:
    artifact = _setup(world, tmp_path)
    jobs: list[dict[str, Any]] = []

    def behave(job: dict[str, Any]) -> tuple[str, str]:
        jobs.append(job)
        progress = json.dumps({"event": "progress", "opponent": "random", "games": 32})
        return "Complete", f"{progress}\n{json.dumps(RESULT)}\n"

    world.emulator.job_behavior = behave
    outcome = world.apply()
    assert outcome.result == "changed", outcome.message
    assert _pointer(world) == hashlib.sha256(MODEL_V1).hexdigest()
    [job] = jobs
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/gauntlet:7"
    assert container["command"] == ["python", "-m", "reconciler.gauntlet.worker", "-"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    # It imports game modules: hardened like any pod running repository code.
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["reconciler.dev/network"] == "fetch", "models by URI, nothing else"
    request = json.loads(next(e["value"] for e in container["env"]
                              if e["name"] == "RECONCILER_GAUNTLET_JOB"))
    assert request["candidate"] == {"uri": f"file://{artifact}",
                                    "sha256": hashlib.sha256(MODEL_V1).hexdigest(),
                                    "format": "file"}
    assert request["spec"]["match"]["opponents"][0]["name"] == "random"
    journal = world.journal()
    try:
        assert journal.gpu_seconds_since(0) == 3.5, "the Job's GPU time counts in the budget"
    finally:
        journal.close()


def test_a_job_whose_gate_fails_blocks_the_flip_and_is_not_rerun(world: KubeWorld,
                                                                  tmp_path: Path) -> None:
    _setup(world, tmp_path)
    failed = {**RESULT, "passed": False, "reason": "GateFailed"}
    world.emulator.job_behavior = lambda job: ("Complete", json.dumps(failed) + "\n")
    outcome = world.apply()
    assert outcome.result == "failed"
    assert "gate gpu-gate rejected" in outcome.message
    assert _pointer(world) is None
    world.apply()
    assert world.emulator.counters.by_kind[("POST", "jobs")] == 1, "the verdict is remembered"


def test_a_job_past_its_timeout_is_deleted(world: KubeWorld, tmp_path: Path) -> None:
    _setup(world, tmp_path)
    world.emulator.job_behavior = lambda job: ("Hang", "")
    outcome = world.apply()
    assert outcome.result == "transient", "an error of the gate, retried with backoff"
    assert "did not finish within 2s; the Job was deleted" in outcome.message
    assert world.emulator.counters.by_kind[("DELETE", "jobs")] == 1
    listed = [k for k in world.emulator.objects if k[0].plural == "jobs"
              and not world.emulator.objects[k].deleted]
    assert listed == []
    assert _pointer(world) is None


def test_a_job_that_crashes_without_a_verdict_is_a_gauntlet_error(world: KubeWorld,
                                                                  tmp_path: Path) -> None:
    _setup(world, tmp_path)
    world.emulator.job_behavior = lambda job: ("Failed", "Traceback ...\nCUDA error: no GPU\n")
    outcome = world.apply()
    assert outcome.result == "transient", "an error of the gate, retried with backoff"
    assert "failed without a result: CUDA error: no GPU" in outcome.message


def test_the_job_container_entry_point_fetches_verifies_and_plays(tmp_path: Path) -> None:
    """What the Job's container runs: the request in the environment, models by URI."""
    candidate = EXAMPLE / "models" / "connect4-policy-v2.pt"
    request = {"candidate": {"uri": f"file://{candidate}", "format": "torch",
                             "sha256": hashlib.sha256(candidate.read_bytes()).hexdigest()},
               "previous": None,
               "spec": {"device": "cpu", "match": {
                   "game": "connect4", "games": 16, "batchSize": 16, "seed": 1,
                   "opponents": [{"name": "random", "minScore": 0.5}]}}}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT),
           "RECONCILER_GAUNTLET_JOB": json.dumps(request)}
    done = subprocess.run([sys.executable, "-m", "reconciler.gauntlet.worker", "-"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["event"] == "result" and last["opponents"][0]["opponent"] == "random"
    request["candidate"]["sha256"] = "0" * 64  # type: ignore[index]
    env["RECONCILER_GAUNTLET_JOB"] = json.dumps(request)
    tampered = subprocess.run([sys.executable, "-m", "reconciler.gauntlet.worker", "-"],
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300, check=False)
    assert tampered.returncode == 2
    assert "error" in json.loads(tampered.stdout.strip().splitlines()[-1])["event"]


def test_a_pr_check_runs_the_job_on_the_artifact_it_names(world: KubeWorld,
                                                          tmp_path: Path) -> None:
    _setup(world, tmp_path)
    candidate = tmp_path / "published" / "candidate.bin"
    candidate.write_bytes(b"a new candidate\n")
    requests: list[dict[str, Any]] = []

    def behave(job: dict[str, Any]) -> tuple[str, str]:
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        requests.append(json.loads(env[0]["value"]))
        return "Complete", json.dumps(RESULT) + "\n"

    world.emulator.job_behavior = behave
    done = subprocess.run([sys.executable, "-m", "reconciler", "gauntlet", "connect4-policy",
                           "--artifact", f"file://{candidate}", "--config", str(world.config)],
                          capture_output=True, text=True, cwd=world.root, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("PASS  connect4-policy")
    [request] = requests
    assert request["candidate"]["uri"] == f"file://{candidate}"
    assert request["candidate"]["sha256"] == hashlib.sha256(candidate.read_bytes()).hexdigest()
    assert _pointer(world) is None, "a PR check never flips"


def test_a_stop_deletes_the_job_and_leaves_no_verdict(world: KubeWorld, tmp_path: Path) -> None:
    _setup(world, tmp_path)
    stop = threading.Event()

    def stop_while_it_runs(job: dict[str, Any]) -> tuple[str, str]:
        threading.Timer(0.3, stop.set).start()
        return "Hang", ""

    world.emulator.job_behavior = stop_while_it_runs
    outcome = world.apply(stop=stop)
    assert outcome.report is not None
    [flip] = [r for r in outcome.report.results if r.action.kind == "Model"]
    assert flip.result == "skipped" and "was stopped; the Job was deleted" in flip.message
    assert world.emulator.counters.by_kind[("DELETE", "jobs")] == 1
    world.emulator.job_behavior = lambda job: ("Complete", json.dumps(RESULT) + "\n")
    assert world.apply().result == "changed", "not remembered as failed: runs again"
    assert _pointer(world) == hashlib.sha256(MODEL_V1).hexdigest()
