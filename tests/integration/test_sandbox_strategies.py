"""Hostile strategy modules through the real CLI (``python -m reconciler validate``).

Each module does what an attacker with a commit would try; in every case the CLI survives
and names the file and the rule, nothing the module started is left running, and the
daemon's state directory, secrets and home stay out of reach.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, Result, example_copy, survivors

SECRET = "hunter2-d41d8cd9"  # in the daemon's environment and files; must never be read


def _strategy(folder: Path, source: str, timeout: str = "20s") -> None:
    (folder / "strategies" / "gepetto.py").write_text(source)
    spec = folder / "strategies" / "gepetto.yaml"
    text = spec.read_text().replace("checkTimeout: 60s", f"checkTimeout: {timeout}")
    spec.write_text(text.replace("  tests:\n    - strategies/test_gepetto.py\n", ""))


@pytest.fixture
def daemon_like(tmp_path: Path) -> dict[str, Path]:
    """A state dir, a home with SSH and kube credentials, a webhook secret: all holding
    SECRET, as the daemon's host would."""
    home, state = tmp_path / "home", tmp_path / "state"
    for path in (home / ".ssh" / "id_ed25519", home / ".kube" / "config",
                 state / "webhook-secret", state / "journal.db"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SECRET)
    return {"home": home, "state": state}


def _validate(cli: Callable[..., Result], folder: Path, daemon_like: dict[str, Path]) \
        -> Result:
    return cli("validate", str(folder), "--state-dir", str(daemon_like["state"]),
               env={"HOME": str(daemon_like["home"]), "RECONCILER_WEBHOOK_SECRET": SECRET,
                    "KUBECONFIG": str(daemon_like["home"] / ".kube" / "config")})


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_an_import_that_signals_its_parents_leaves_validate_standing(
        tmp_path: Path, cli: Callable[..., Result], daemon_like: dict[str, Path],
        signal_name: str) -> None:
    folder = example_copy(tmp_path)
    # Not kill(-1): if the sandbox ever regressed, the suite (root here) would kill the host.
    _strategy(folder, f"import os, signal\nos.kill(os.getppid(), signal.{signal_name})\n"
                      "raise RuntimeError('still standing after the signal')\n")
    done = _validate(cli, folder, daemon_like)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "strategies/gepetto.py:" in done.stdout
    assert "[strategy-import" in done.stdout


def test_secrets_state_and_home_are_out_of_reach(
        tmp_path: Path, cli: Callable[..., Result], daemon_like: dict[str, Path]) -> None:
    folder = example_copy(tmp_path)
    before = _listing(daemon_like["state"])
    targets = [str(p) for p in (daemon_like["home"] / ".ssh" / "id_ed25519",
                                daemon_like["home"] / ".kube" / "config",
                                daemon_like["state"] / "webhook-secret",
                                daemon_like["state"] / "journal.db",
                                Path.home() / ".ssh", folder / "fleet.yaml")]
    _strategy(folder, f"""import os
SECRET = {SECRET!r}
reached = []
own = open('/proc/self/cmdline', 'rb').read() if os.path.exists('/proc') else b'x'
assert own, 'the check cannot read even its own process: the test would prove nothing'
for pid in (os.listdir('/proc') if os.path.exists('/proc') else []):
    for name in ('environ', 'cmdline'):
        try:
            if SECRET.encode() in open(f'/proc/{{pid}}/{{name}}', 'rb').read():
                reached.append(f'/proc/{{pid}}/{{name}}')
        except OSError:
            pass
for key, value in os.environ.items():
    if SECRET in value or 'RECONCILER' in key:
        reached.append('environment ' + key)
for path in {targets!r}:
    if os.path.exists(path):
        reached.append('sees ' + path)
for folder in ({str(daemon_like['state'])!r}, {str(daemon_like['home'])!r}, {str(folder)!r},
               os.getcwd()):
    try:
        with open(os.path.join(folder, 'planted'), 'w') as planted:
            planted.write('x')
        reached.append('wrote into ' + folder)
    except OSError:
        pass
open('/tmp/scratch-is-writable', 'w').write('x')
if reached:
    raise RuntimeError('reached: ' + ', '.join(reached))
def select_chutes():
    return []
""")
    done = _validate(cli, folder, daemon_like)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _listing(daemon_like["state"]) == before
    assert not (folder / "planted").exists()


def test_no_network_not_even_localhost(tmp_path: Path, cli: Callable[..., Result],
                                       daemon_like: dict[str, Path]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    folder = example_copy(tmp_path)
    _strategy(folder, f"""import socket
try:
    socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=2)
except OSError:
    pass
else:
    raise RuntimeError('connected to the host')
def select_chutes():
    return []
""")
    done = _validate(cli, folder, daemon_like)
    assert done.returncode == 0, done.stdout + done.stderr
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()


@pytest.mark.parametrize(("source", "rule", "text"), [
    ("import os, sys\nos.write(int(sys.argv[4]), b'{\"outcome\": \"o')\nos._exit(0)\n",
     "strategy-import-output", "malformed report"),
    ("import os, sys\nfd = int(sys.argv[4])\nchunk = b'x' * (1 << 20)\n"
     "for _ in range(400):\n    os.write(fd, chunk)\n",
     "strategy-import-output", "a line longer than 65536 bytes"),
    ("import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n",
     "strategy-import-output", "more than 64 MiB to stdout and stderr"),
    ("chunks = []\nwhile True:\n    chunks.append(bytearray(256 << 20))\n",
     "strategy-import", "raised MemoryError"),
])
def test_broken_reports_and_runaway_output_fail_the_check(
        tmp_path: Path, source: str, rule: str, text: str) -> None:
    folder = example_copy(tmp_path)
    _strategy(folder, source)
    # A process of its own, so its peak memory (VmHWM: ru_maxrss would carry over the
    # forking test process's) is the CLI's alone: the 400 MiB line and the endless stderr
    # are read in bounded pieces, never held.
    script = ("import sys; from reconciler.cli import main; "
              f"code = main(['validate', {str(folder)!r}]); "
              "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
              "print('maxrss', peak[0].split()[1]); "
              "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"[{rule}]" in done.stdout and text in done.stdout, done.stdout
    maxrss_kib = int(done.stdout.rsplit("maxrss ", 1)[1])
    assert maxrss_kib < 200 * 1024


def test_a_fork_bomb_is_contained_and_killed(tmp_path: Path, cli: Callable[..., Result],
                                             daemon_like: dict[str, Path]) -> None:
    folder = example_copy(tmp_path)
    marker = f"3000.{os.getpid()}3"
    # Only inside the sandbox's unprivileged uid: RLIMIT_NPROC does not bind root.
    _strategy(folder, "import os, subprocess, time\n"
                      "if os.getuid() != 65534:\n    raise RuntimeError('not sandboxed')\n"
                      f"subprocess.Popen(['sleep', '{marker}'])\n"
                      "while True:\n    try:\n        os.fork()\n"
                      "    except OSError:\n        time.sleep(60)\n", timeout="5s")
    done = _validate(cli, folder, daemon_like)
    assert done.returncode == 1
    assert "did not finish within 5s [strategy-import-timeout]" in done.stdout
    assert survivors(marker) == []
    assert survivors("strategy_worker.py") == []
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks


@pytest.mark.parametrize("hang", [True, False])
def test_a_grandchild_that_setsids_does_not_survive(
        tmp_path: Path, cli: Callable[..., Result], daemon_like: dict[str, Path],
        hang: bool) -> None:
    folder = example_copy(tmp_path)
    marker = f"3000.{os.getpid()}{4 + hang}"
    _strategy(folder, "import os, time\n"
                      "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                      f"        os.execvp('sleep', ['sleep', '{marker}'])\n    os._exit(0)\n"
                      "time.sleep(1)\n"
                      + ("time.sleep(300)\n" if hang else "def select_chutes():\n    pass\n"),
              timeout="3s")
    done = _validate(cli, folder, daemon_like)
    assert done.returncode == (1 if hang else 0), done.stdout + done.stderr
    assert survivors(marker) == []
