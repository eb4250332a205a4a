"""A Kubernetes fleet for tests: a git repository declaring targets on the emulated API
server, settings pointing at it, and one reconcile pass at a time through the real code."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.app import Wiring
from reconciler.execute.executor import Hooks
from reconciler.journal import Journal
from reconciler.passes import PassOutcome, run_pass
from reconciler.settings import Settings, load_settings
from tests.conftest import Repo, git
from tests.e2e.daemon import DaemonProcess
from tests.kube.emulator import RunningCluster

NAMESPACE = "ml"
STRATEGY_V1 = '''"""Picks the chutes to run."""


def select_chutes(candidates):
    return sorted(candidates)[:3]
'''
STRATEGY_V2 = STRATEGY_V1.replace("[:3]", "[:4]")
MODEL_V1 = b"policy weights v1\n" * 64
MODEL_V2 = b"policy weights v2\n" * 64


def target_doc(name: str, namespace: str, context: str = "kmock", **extra: Any) -> str:
    spec = {"kubernetes": {"context": context, "namespace": namespace}, **extra}
    return json.dumps({"apiVersion": "reconciler/v1", "kind": "Target",
                       "metadata": {"name": name}, "spec": spec})


def strategy_doc(targets: list[str], *, key: str = "gepetto.py", soak: str | None = None,
                 on_failure: str = "rollback", restart: bool = True) -> str:
    spec: dict[str, Any] = {
        "source": "strategies/gepetto.py", "entrypoint": "select_chutes", "targets": targets,
        "deliver": {"configMap": {"name": "gepetto-code", "key": key}},
        "onFailure": on_failure}
    if restart:
        spec["restart"] = {"deployment": "gepetto", "timeout": "3s"}
    if soak:
        spec["health"] = {"soak": soak}
    return json.dumps({"apiVersion": "reconciler/v1", "kind": "Strategy",
                       "metadata": {"name": "gepetto"}, "spec": spec})


def config_doc(targets: list[str], data: dict[str, Any], name: str = "gepetto-settings"
               ) -> str:
    return json.dumps({"apiVersion": "reconciler/v1", "kind": "Config",
                       "metadata": {"name": name},
                       "spec": {"targets": targets, "format": "json", "data": data,
                                "deliver": {"configMap": {"name": name,
                                                          "key": "settings.json"}}}})


def model_doc(targets: list[str], artifact: str, content: bytes, **extra: Any) -> str:
    spec = {"targets": targets,
            "artifact": {"uri": artifact, "sha256": hashlib.sha256(content).hexdigest(),
                         "format": "file"},
            "pointer": {"configMap": {"name": "canonical-models", "key": "connect4-policy"}},
            **extra}
    return json.dumps({"apiVersion": "reconciler/v1", "kind": "Model",
                       "metadata": {"name": "connect4-policy"}, "spec": spec})


def deployment(name: str, namespace: str = NAMESPACE, replicas: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main",
                                                           "image": "runner:1"}]}}}}


@dataclass
class KubeWorld:
    """The repository, the settings file and the cluster; ``apply()`` runs one pass."""

    root: Path
    cluster: RunningCluster
    settings_extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.repo = self.root / "repo"
        self.folder = self.repo / "desired-state"
        self.folder.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        self.git = Repo(self.repo)
        self.kubeconfig = self.cluster.kubeconfig(self.root / "kubeconfig",
                                                  {"kmock": NAMESPACE, "other": "other"})
        self.state = self.root / "state"
        self.write_settings()

    @property
    def emulator(self) -> Any:
        return self.cluster.emulator

    def write_settings(self, **extra: Any) -> None:
        self.settings_extra.update(extra)
        content = {"repo": str(self.repo), "stateDir": str(self.state), "listen": "",
                   "kubernetes": {"kubeconfig": str(self.kubeconfig),
                                  "pollInterval": "50ms", "requestTimeout": "2s"},
                   **self.settings_extra}
        self.config = self.root / "reconciler.yaml"
        self.config.write_text(json.dumps(content))

    def write(self, relative: str, content: str | bytes) -> None:
        self.git.write(relative, content)

    def remove(self, relative: str) -> None:
        (self.folder / relative).unlink()

    def commit(self, message: str = "change") -> str:
        return self.git.commit(message)

    def settings(self) -> Settings:
        return load_settings(self.config, {})

    def apply(self, hooks: Hooks | None = None,
              stop: threading.Event | None = None) -> PassOutcome:
        settings = self.settings()
        journal = Journal(settings.journal_path)
        try:
            return run_pass(Wiring(settings), journal, stop or threading.Event(), hooks=hooks)
        finally:
            journal.close()

    def journal(self) -> Journal:
        return Journal(self.settings().journal_path)

    def configmap(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self.emulator.get("configmaps", namespace, name)  # type: ignore[no-any-return]

    def basic(self, *, soak: str | None = None, on_failure: str = "rollback",
              prune: bool = False) -> None:
        """One target, a strategy and a config restarting deployment gepetto, a model."""
        self.write("targets.yaml", target_doc("cluster-a", NAMESPACE, prune=prune)
                   if prune else target_doc("cluster-a", NAMESPACE))
        self.write("strategies/gepetto.py", STRATEGY_V1)
        self.write("strategies/gepetto.yaml", strategy_doc(["cluster-a"], soak=soak,
                                                           on_failure=on_failure))
        self.write("config/settings.yaml", config_doc(["cluster-a"], {"threshold": 0.5}))
        self.write("models/policy.bin", MODEL_V1)
        self.write("models/connect4.yaml", model_doc(["cluster-a"], "models/policy.bin",
                                                     MODEL_V1))
        self.emulator.namespaces.add(NAMESPACE)
        self.emulator.put("deployments", deployment("gepetto"))


# The daemon as a subprocess, for leader election and self-heal.

def start_daemon(world: KubeWorld, state: str, resync: str = "1s") -> DaemonProcess:
    """``reconciler run`` on the world's settings with a state dir of its own."""
    config = json.loads(world.config.read_text())
    config["stateDir"] = str(world.root / state)
    config["resync"] = resync
    path = world.root / f"{state}.yaml"
    path.write_text(json.dumps(config))
    return DaemonProcess(path, world.root / state, world.root)


def daemon_status(world: KubeWorld, state: str) -> str:
    try:
        return str(json.loads((world.root / state / "daemon.json").read_text())["status"])
    except (OSError, ValueError):
        return ""


def daemon_identity(daemon: DaemonProcess) -> str:
    for line in daemon.log().splitlines():
        if "leader election: Lease" in line and " as " in line:
            return line.rsplit(" as ", 1)[1]
    raise AssertionError(f"no identity in:\n{daemon.log()}")


def passes(world: KubeWorld, state: str) -> int:
    """Passes the daemon with that state dir has begun (a standby begins none)."""
    path = world.root / state / "journal.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM passes").fetchone()[0])
