"""Hostile game modules and metrics commands, through the real worker and real commands.

The gauntlet worker imports the repository's game module, and a metrics command is the
repository's program: both run in the sandbox, and whatever they print is validated
before it reaches the runner's evidence, its progress lines or the games counter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.digests import DigestCache
from reconciler.gauntlet.runner import GauntletRunner
from reconciler.journal import Journal
from reconciler.store import Store
from tests.conftest import REPO_ROOT, survivors
from tests.integration.test_gauntlets import GOOD, MATCH, desired, metrics_spec

SECRET = "hunter2-0cc175b9"
HOSTILE_GAME = ("import os, sys\nworker = sys.modules['__main__']\n"
                "def create_game(device):\n")
PROGRESS = ("opponent='random', minScore=0.85, score=0.5, interval=[0.4, 0.6], played=0, "
            "passed=False, reason=None, pentanomial=[0, 0, 0, 0, 0]")


def _run(tmp_path: Path, spec: dict[str, Any], files: dict[str, bytes] | None = None) \
        -> tuple[Any, list[tuple[str, int]], list[str]]:
    counted: list[tuple[str, int]] = []
    progress: list[str] = []
    state, model = desired(spec, files)
    runner = GauntletRunner(Journal(tmp_path / "journal.db"),
                            Store(tmp_path / "store", DigestCache()),
                            games=lambda opponent, n: counted.append((opponent, n)),
                            progress=progress.append)
    return runner.evaluate(model, state, GOOD.name, GOOD), counted, progress


def _game(body: str) -> dict[str, Any]:
    return {"match": {**MATCH, "game": "games/hostile.py"}, "device": "cpu",
            "timeout": "60s", "files": {"games/hostile.py": (HOSTILE_GAME + body).encode()}}


@pytest.mark.parametrize(("body", "text"), [
    (f"    worker.emit('progress', games=-1, {PROGRESS})\n    os._exit(0)\n",
     "games must be a non-negative integer"),
    (f"    worker.emit('progress', games=10, {PROGRESS})\n"
     f"    worker.emit('progress', games=4, {PROGRESS})\n    os._exit(0)\n",
     "games for random went down from 10 to 4"),
    ("    for i in range(3000):\n"
     f"        fields = {{**dict({PROGRESS}), 'opponent': f'bot{{i}}'}}\n"
     "        worker.emit('progress', games=i, **fields)\n    os._exit(0)\n",
     "opponent 'bot0' is not one the gauntlet declares"),
    ("    worker._events.write('{\"event\": \"result\", \"passed\": tr')\n"
     "    worker._events.flush()\n    os._exit(0)\n", "not a JSON object"),
    ("    worker.emit('result', passed=True, opponents=[], device='cpu', seconds=-1, "
     "gpuSeconds=0)\n    os._exit(0)\n", "seconds must be a number"),
])
def test_a_game_module_cannot_forge_events(tmp_path: Path, body: str, text: str) -> None:
    spec = _game(body)
    verdict, counted, _ = _run(tmp_path, spec, spec.pop("files"))
    assert not verdict.passed and verdict.reason == "GauntletError"
    assert "broke its contract" in verdict.message and text in verdict.message
    assert all(opponent == "random" and n >= 0 for opponent, n in counted)


def test_valid_progress_reaches_the_counter_and_the_progress_line(tmp_path: Path) -> None:
    spec = _game(f"    worker.emit('progress', games=6, {PROGRESS})\n"
                 f"    worker.emit('progress', games=10, {PROGRESS})\n"
                 "    raise RuntimeError('done pretending')\n")
    verdict, counted, progress = _run(tmp_path, spec, spec.pop("files"))
    assert verdict.reason == "GauntletError" and "done pretending" in verdict.message
    assert counted == [("random", 6), ("random", 4)]
    assert progress[-1].endswith("random score 0.5 after 10 games")


def test_a_game_module_and_a_metrics_command_see_no_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_WEBHOOK_SECRET", SECRET)
    (tmp_path / "store").mkdir()
    (tmp_path / "webhook-secret").write_text(SECRET)
    probe = f"""
import os
reached = [k for k, v in os.environ.items() if {SECRET!r} in v]
for path in ({str(tmp_path / 'journal.db')!r}, {str(tmp_path / 'webhook-secret')!r},
             {str(tmp_path / 'store')!r}, {str(Path.home() / '.ssh')!r}):
    if os.path.exists(path):
        reached.append(path)
try:
    open({str(tmp_path / 'planted')!r}, 'w').write('x')
    reached.append('wrote')
except OSError:
    pass
"""
    game = _game("".join(f"    {line}\n" for line in probe.strip().splitlines())
                 + "    raise RuntimeError(f'sealed, reached {reached}')\n")
    verdict, _, _ = _run(tmp_path, game, game.pop("files"))
    assert "sealed, reached []" in verdict.message
    script = probe + "import json\nprint(json.dumps({'accuracy': 0.0 if reached else 1.0}))\n"
    verdict, _, _ = _run(tmp_path, metrics_spec(script, runs=1))
    assert verdict.passed, verdict.message
    assert not (tmp_path / "planted").exists()


@pytest.mark.parametrize("network", [False, True])
def test_a_metrics_command_has_network_only_when_declared(tmp_path: Path,
                                                          network: bool) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(5)
    script = (f"import json, socket\ntry:\n    socket.create_connection(('127.0.0.1', "
              f"{listener.getsockname()[1]}), timeout=2)\n    up = 1.0\n"
              "except OSError:\n    up = 0.0\nprint(json.dumps({'accuracy': up}))\n")
    spec = metrics_spec(script, runs=1)
    spec["metrics"]["network"] = network
    verdict, _, _ = _run(tmp_path, spec)
    assert verdict.passed is network, verdict.message
    if network:
        listener.accept()[0].close()
    else:
        with pytest.raises(TimeoutError):
            listener.settimeout(0.2)
            listener.accept()
    listener.close()


@pytest.mark.parametrize(("script", "text"), [
    ("import sys\nfor _ in range(400):\n    sys.stdout.write('x' * (1 << 20))\n",
     "a line longer than 65536 bytes"),
    ("import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n",
     "more than 64 MiB to stdout and stderr"),
])
def test_runaway_metrics_output_is_cut_off(tmp_path: Path, script: str, text: str) -> None:
    verdict, _, _ = _run(tmp_path, metrics_spec(script, runs=1))
    assert verdict.reason == "GauntletError" and text in verdict.message


def test_a_metrics_command_leaves_nothing_running(tmp_path: Path) -> None:
    marker = f"3000.{os.getpid()}6"
    script = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n"
              f"    os.execvp('sleep', ['sleep', '{marker}'])\ntime.sleep(300)\n")
    spec = {**metrics_spec(script, runs=1), "timeout": "2s"}
    verdict, _, _ = _run(tmp_path, spec)
    assert verdict.reason == "GauntletTimeout"
    assert survivors(marker) == []


def test_a_400_mib_event_line_does_not_grow_the_runner(tmp_path: Path) -> None:
    body = ("    chunk = 'x' * (1 << 20)\n    for _ in range(400):\n"
            "        worker._events.write(chunk)\n        worker._events.flush()\n")
    spec = _game(body)
    files = spec.pop("files")
    script = (
        "import json, sys; from pathlib import Path\n"
        "from tests.integration.test_sandbox_gauntlets import _run\n"
        f"spec = json.loads({json.dumps(spec)!r})\n"
        f"files = {files!r}\n"
        f"verdict, _, _ = _run(Path({str(tmp_path)!r}), spec, files)\n"
        "print(verdict.message)\n"
        "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
        "print('maxrss', peak[0].split()[1])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "a line longer than 1048576 bytes" in done.stdout
    assert int(done.stdout.rsplit("maxrss ", 1)[1]) < 200 * 1024


# The unit's old MemoryDenyWriteExecute=yes, emulated: prctl(PR_SET_MDWE) in a process
# that then runs a CPU gauntlet. Inherited (what systemd does) it breaks torch's oneDNN
# kernels; the daemon's own, not inherited (sandbox/memory.py), leaves the worker alone.
MDWE_SCRIPT = """
import ctypes, mmap, sys
from pathlib import Path
from reconciler.sandbox.memory import deny_write_execute_to_this_process
from tests.integration.test_sandbox_gauntlets import _run, MATCH
if sys.argv[1] == 'inherited':
    assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0
else:
    assert deny_write_execute_to_this_process()
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print('W+X allowed here')
except PermissionError:
    print('W+X denied here')
match = {**MATCH, 'games': 40, 'opponents': [{'name': 'random', 'minScore': 0.85}]}
verdict, _, _ = _run(Path(sys.argv[2]), {'match': match, 'device': 'cpu'})
print(verdict.reason, verdict.message)
"""


@pytest.mark.parametrize(("mode", "reason"), [("own", "GatePassed"),
                                              ("inherited", "GauntletError")])
def test_a_cpu_gauntlet_under_the_daemons_write_execute_denial(
        tmp_path: Path, mode: str, reason: str) -> None:
    done = subprocess.run([sys.executable, "-c", MDWE_SCRIPT, mode, str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "W+X denied here" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith(reason), done.stdout
    if mode == "inherited":
        assert "could not create a primitive" in done.stdout
