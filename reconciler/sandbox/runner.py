"""One way to run repository code: inside bubblewrap, or not at all.

Strategy imports and tests, metrics commands and the gauntlet worker (which imports game
modules) are code a commit or a pull request controls. Each runs in ``bwrap`` with:

- an empty environment plus the caller's allow-list;
- its own user (uid/gid 65534 mapped to the daemon's), PID, IPC, UTS, cgroup, mount and
  (unless the document declares ``network: true``) network namespaces;
- a root holding only ``/usr`` (and its ``/bin``, ``/lib`` links), the Python installation,
  ``ld.so.cache``, a fresh ``/proc`` and ``/dev``, a size-limited private ``/tmp``, and the
  files the caller names, read-only; never the state directory, store, mirror, settings,
  secrets, kubeconfig or home;
- ``--die-with-parent`` and ``--new-session``; rlimits (``prlimit`` as the first program
  inside) on CPU seconds, file size, open files, processes and address space;
- at the timeout bwrap is killed, which kills the namespace's init and with it every
  process in the namespace, including grandchildren that ``setsid()``.

Without bwrap, or where the kernel refuses namespaces, nothing runs:
:class:`SandboxUnavailable` says why and how to fix it, unless the settings opt out with
``sandbox: none`` (then the same limits apply through ``prlimit``, without namespaces).

In mode ``job`` (a cluster, where the daemon's pod may not make namespaces) strategy checks
run as Jobs (``reconciler.coderun``); everything else that would run here is refused with
:class:`SandboxUnavailable`, as without bwrap.

The mode is process-wide (``configure``/``current``): every command that runs repository
code reads it, and the composition root sets it once from the settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import StalledError

_STOP_POLL_SECONDS = 0.2  # how soon a stop ends a run that was handed one

MODES = ("bwrap", "none", "job")
SANDBOX_UID = 65534
REPORT_FD_PLACEHOLDER = "{report_fd}"
_MIB = 1 << 20
_READ_CHUNK = 64 * 1024
_ETC_ALWAYS = ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime")
_ETC_NETWORK = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf",
                "/etc/gai.conf", "/etc/services", "/etc/protocols", "/etc/ssl",
                "/etc/ca-certificates")
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # reconciler/
_TEARDOWN_SECONDS = 10.0  # how long kill() waits for the kernel to empty a namespace


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    """Not yet exited (a zombie has: its namespace is already empty)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class SandboxUnavailable(StalledError):
    """Repository code cannot run here: no bwrap, or namespaces refused."""

    reason = "SandboxUnavailable"


class ChannelViolation(Exception):
    """A child broke the output contract (a line or the total too long)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-process rlimits inside the sandbox. ``address_space_bytes`` is for CPU work
    only: a CUDA worker maps the GPU's whole address range and fails under any useful
    RLIMIT_AS, so device workers pass None (their memory is bounded by the GPU's own)."""

    cpu_seconds: int
    address_space_bytes: int | None
    file_bytes: int = 64 * _MIB
    open_files: int = 256
    processes: int = 128
    scratch_bytes: int = 64 * _MIB  # the private /tmp (a tmpfs: runaway writes stay small)


@dataclass(frozen=True, slots=True)
class Launch:
    """What to run. ``read_only`` paths appear at their own paths, read-only; ``cwd``, unless
    it is one of them, is a fresh writable folder (keep it under /tmp, the private tmpfs,
    so that it counts against ``scratch_bytes``). The interpreter (and its virtualenv) is
    always there; ``package`` also makes reconciler itself importable (for the worker).
    ``channel`` is where results come back: ``stdout`` (stderr feeds the log tail), or
    ``fd`` (a pipe whose number replaces ``{report_fd}`` in argv; stdout and stderr both
    feed the log tail)."""

    argv: tuple[str, ...]
    cwd: Path
    limits: Limits
    read_only: tuple[Path, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    package: bool = False
    devices: tuple[str, ...] = ()
    channel: str = "stdout"
    max_line_bytes: int = 64 * 1024
    max_channel_bytes: int = 16 * _MIB
    max_log_bytes: int = 64 * _MIB
    tail_bytes: int = 4096


@dataclass(frozen=True, slots=True)
class Outcome:
    timed_out: bool
    returncode: int
    lines: list[str]  # the last channel lines (at most ``keep_lines``)
    log_tail: str
    violation: str | None  # the output contract was broken; the sandbox was killed
    stopped: bool = False  # ``stop`` was set: killed, no result


def base_environment() -> dict[str, str]:
    """What every sandboxed program gets; callers add their own allow-list."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
            "LANG": "C.UTF-8", "USER": "sandbox", "LOGNAME": "sandbox"}


class Running:
    """A started sandbox: channel lines as they come, a bounded log tail, kill at will."""

    def __init__(self, process: subprocess.Popen[bytes], channel: int, log: int,
                 launch: Launch, info: int | None) -> None:
        self._process = process
        self._launch = launch
        self._info = info
        self._init: int | None = None
        self._selector = selectors.DefaultSelector()
        self._selector.register(channel, selectors.EVENT_READ, "channel")
        self._selector.register(log, selectors.EVENT_READ, "log")
        self._pending = bytearray()
        self._channel_total = 0
        self._log_total = 0
        self._tail = bytearray()
        self._channel_open = True

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self, seconds: float) -> list[str] | None:
        """Complete channel lines that arrived within ``seconds`` (maybe none); None once
        the channel is closed. ChannelViolation when a line or the output is too long."""
        if not self._channel_open:
            return None
        lines: list[str] = []
        ready = self._selector.select(max(0.0, seconds))
        if not ready and self._process.poll() is not None:
            # Ended with nothing more to read; only a process that escaped a group
            # without namespaces (mode ``none``) could still hold the pipe.
            self._channel_open = False
            self._drain_log()
            return None
        for key, _ in ready:
            fd = int(key.fd)
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                self._selector.unregister(fd)
                os.close(fd)
                if key.data == "channel":
                    self._channel_open = False
                    if self._pending:  # a last line without its newline: still a line
                        lines.append(self._pending.decode(errors="replace"))
                        self._pending.clear()
                    self._drain_log()
                    return lines or None
                continue
            if key.data == "log":
                self._log(chunk)
            else:
                lines += self._channel(chunk)
        return lines

    def _channel(self, chunk: bytes) -> list[str]:
        launch = self._launch
        self._channel_total += len(chunk)
        if self._channel_total > launch.max_channel_bytes:
            raise ChannelViolation(f"it wrote more than {launch.max_channel_bytes // _MIB} "
                                   "MiB of results")
        self._pending += chunk
        *complete, rest = self._pending.split(b"\n")
        if len(rest) > launch.max_line_bytes:
            raise ChannelViolation(f"it wrote a line longer than {launch.max_line_bytes} bytes")
        self._pending = bytearray(rest)
        for line in complete:
            if len(line) > launch.max_line_bytes:
                raise ChannelViolation(f"it wrote a line longer than "
                                       f"{launch.max_line_bytes} bytes")
        return [line.decode(errors="replace") for line in complete]

    def _log(self, chunk: bytes) -> None:
        self._log_total += len(chunk)
        if self._log_total > self._launch.max_log_bytes:
            raise ChannelViolation(f"it wrote more than {self._launch.max_log_bytes // _MIB} "
                                   "MiB to stdout and stderr")
        self._tail += chunk
        del self._tail[:-self._launch.tail_bytes]

    def _drain_log(self) -> None:
        """The rest of the log after the channel closed, without waiting on a writer
        that is still alive."""
        for key in list(self._selector.get_map().values()):
            if key.data != "log":
                continue
            fd = int(key.fd)
            while self._selector.select(0.05):
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    break
                with contextlib.suppress(ChannelViolation):
                    self._log(chunk)

    def log_tail(self) -> str:
        return self._tail.decode(errors="replace")

    def kill(self) -> None:
        """Everything in the sandbox dies before this returns. The namespace's init (bwrap's
        child) is killed, and the kernel kills every process in a PID namespace before its
        init is gone, ``setsid()`` grandchildren included; bwrap itself goes with its
        process group. Without namespaces (``sandbox: none``) the process group goes."""
        init = self._init_pid()
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        deadline = time.monotonic() + _TEARDOWN_SECONDS
        while init is not None and _alive(init) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _init_pid(self) -> int | None:
        """The host PID of the namespace's init, from bwrap's --info-fd, if bwrap has set
        it up and it is still bwrap's child (the pipe's JSON is only trusted that far)."""
        if self._info is not None and self._init is None:
            ready = select.select([self._info], [], [], 0)[0]
            if ready:
                with contextlib.suppress(ValueError):
                    info = json.loads(os.read(self._info, 4096).split(b"}")[0] + b"}")
                    pid = info.get("child-pid") if isinstance(info, dict) else None
                    self._init = pid if isinstance(pid, int) and pid > 1 else None
        if self._init is None or _parent_of(self._init) != self._process.pid:
            return None
        return self._init

    def wait(self, seconds: float | None = None) -> int:
        """The exit status (subprocess.TimeoutExpired after ``seconds``)."""
        return self._process.wait(seconds)

    def close(self) -> None:
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fd)
            with contextlib.suppress(OSError):
                os.close(int(key.fd))
        self._selector.close()
        if self._process.poll() is None:
            self.kill()
        if self._info is not None:
            os.close(self._info)
            self._info = None


class Sandbox:
    """``mode`` ``bwrap`` (the default), ``none`` (the explicit opt-out) or ``job``
    (nothing runs here: strategy checks go to Jobs, see reconciler.coderun)."""

    def __init__(self, mode: str = "bwrap", bwrap: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"sandbox mode {mode!r}: one of {', '.join(MODES)}")
        self.mode = mode
        self._bwrap = bwrap
        self._probe_lock = threading.Lock()
        self._working = False
        self._proc = True

    def problem(self) -> str | None:
        """Why repository code cannot run here, with the fix; None when it can."""
        if self.mode == "none":
            return None
        if self.mode == "job":
            return ("with 'sandbox: job' repository code runs only in Kubernetes Jobs "
                    "(strategy checks, and match gauntlets with 'runIn: job'); this would "
                    "run in the daemon's own pod, which cannot make a sandbox: see "
                    "docs/kubernetes.md")
        with self._probe_lock:
            if self._working:
                return None
            found = self._bwrap or shutil.which("bwrap")
            if found is None or not os.access(found, os.X_OK):
                return ("repository code runs only in a sandbox and bubblewrap is not "
                        "installed: install it (apt-get install bubblewrap), or set "
                        "'sandbox: none' in reconciler.yaml to run it unsandboxed")
            refusal = self._probe(found, proc=True)
            if refusal is not None and "proc" in refusal:
                # Under systemd's ProtectKernelTunables/ProtectKernelLogs the kernel refuses
                # a new /proc in a user namespace (parts of the host's are over-mounted):
                # the sandbox then has no /proc at all, which hides even more.
                refusal = self._probe(found, proc=False)
                self._proc = refusal is not None
            if refusal is not None:
                return ("repository code runs only in a sandbox and this host refuses "
                        f"bubblewrap's namespaces ({refusal}): allow unprivileged user "
                        "namespaces (sysctl user.max_user_namespaces > 0, "
                        "kernel.unprivileged_userns_clone=1, kernel.apparmor_restrict_"
                        "unprivileged_userns=0; under systemd see systemd/reconciler.service), "
                        "or set 'sandbox: none' in reconciler.yaml to run it unsandboxed")
            self._bwrap = found
            self._working = True
            return None

    def _probe(self, bwrap: str, *, proc: bool) -> str | None:
        """bwrap's complaint when it cannot set up a sandbox like ours; None when it can."""
        probe = subprocess.run(
            [bwrap, *self._namespaces(network=False), "--ro-bind", "/", "/",
             *(["--proc", "/proc"] if proc else []), "--", "/bin/true"],
            capture_output=True, check=False, timeout=30, env={"PATH": "/usr/bin:/bin"})
        if probe.returncode == 0:
            return None
        lines = probe.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else f"exit code {probe.returncode}"

    def require(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise SandboxUnavailable(problem)

    @staticmethod
    def _namespaces(network: bool) -> list[str]:
        return ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                *([] if network else ["--unshare-net"]), "--die-with-parent", "--new-session"]

    def command(self, launch: Launch, report_fd: int | None = None,
                info_fd: int | None = None) -> list[str]:
        """The full argv: bwrap's arguments (unless mode ``none``), prlimit, the program."""
        argv = [str(report_fd) if part == REPORT_FD_PLACEHOLDER and report_fd is not None
                else part for part in launch.argv]
        limits = launch.limits
        inner = ["/usr/bin/prlimit", f"--cpu={limits.cpu_seconds}",
                 f"--fsize={limits.file_bytes}", f"--nofile={limits.open_files}",
                 f"--nproc={limits.processes}",
                 *([f"--as={limits.address_space_bytes}"]
                   if limits.address_space_bytes is not None else []), "--", *argv]
        if self.mode == "none":
            return inner
        self.require()
        assert self._bwrap is not None
        args = [self._bwrap, *self._namespaces(launch.network), "--clearenv"]
        for name, value in {**base_environment(), **self._python_environment(launch),
                            **launch.environment}.items():
            args += ["--setenv", name, value]
        args += ["--ro-bind", "/usr", "/usr"]
        for link in _ROOT_LINKS:
            if os.path.islink(link):
                args += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                args += ["--ro-bind", link, link]
        for path in (*_ETC_ALWAYS, *(_ETC_NETWORK if launch.network else ())):
            args += ["--ro-bind-try", path, path]
        args += [*(["--proc", "/proc"] if self._proc else []), "--dev", "/dev"]
        for device in launch.devices:
            args += ["--dev-bind-try", device, device]
        if launch.devices:  # the CUDA runtime finds its GPUs through sysfs
            args += ["--ro-bind", "/sys", "/sys"]
        args += ["--size", str(limits.scratch_bytes), "--tmpfs", "/tmp"]
        for path in self._python_paths(launch):
            args += ["--ro-bind", str(path), str(path)]
        for path in launch.read_only:
            args += ["--ro-bind", str(path), str(path)]
        if launch.cwd not in launch.read_only:
            args += ["--dir", str(launch.cwd)]  # writable, in the sandbox's own /tmp
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        args += ["--chdir", str(launch.cwd), "--", *inner]
        return args

    @staticmethod
    def _python_paths(launch: Launch) -> list[Path]:
        paths = []
        for prefix in {sys.base_prefix, sys.prefix}:
            resolved = Path(prefix).resolve()
            if not resolved.is_relative_to("/usr"):
                paths.append(Path(prefix))
        if launch.package:
            paths.append(_PACKAGE_DIR)
        return sorted(paths)

    @staticmethod
    def _python_environment(launch: Launch) -> dict[str, str]:
        return {"PYTHONPATH": str(_PACKAGE_DIR.parent)} if launch.package else {}

    def start(self, launch: Launch) -> Running:
        """Start it (SandboxUnavailable, or OSError when the program cannot start)."""
        read_channel, write_channel = os.pipe()
        read_log, write_log = os.pipe()
        read_info, write_info = os.pipe() if self.mode == "bwrap" else (None, None)
        try:
            passed: tuple[int, ...] = () if write_info is None else (write_info,)
            if launch.channel == "fd":
                stdout = stderr = write_log
                argv = self.command(launch, report_fd=write_channel, info_fd=write_info)
                passed += (write_channel,)
            else:
                stdout, stderr = write_channel, write_log
                argv = self.command(launch, info_fd=write_info)
            environment = ({**base_environment(), **self._python_environment(launch),
                            **launch.environment} if self.mode == "none" else {})
            process = subprocess.Popen(argv, cwd=launch.cwd, env=environment,
                                       stdin=subprocess.DEVNULL, stdout=stdout,
                                       stderr=stderr, pass_fds=passed,
                                       start_new_session=True)
        except BaseException:
            for fd in (read_channel, read_log, read_info):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in (write_channel, write_log, write_info):
                if fd is not None:
                    os.close(fd)
        return Running(process, read_channel, read_log, launch, read_info)

    def run(self, launch: Launch, timeout: float, keep_lines: int = 1,
            stop: threading.Event | None = None) -> Outcome:
        """Run to the end, the timeout or ``stop`` (looked at every ``_STOP_POLL_SECONDS``);
        the last ``keep_lines`` channel lines."""
        deadline = time.monotonic() + timeout
        running = self.start(launch)
        lines: deque[str] = deque(maxlen=keep_lines)
        step = _STOP_POLL_SECONDS if stop is not None else float("inf")
        try:
            while True:
                remaining = deadline - time.monotonic()
                if stop is not None and stop.is_set():
                    running.kill()
                    return Outcome(False, -9, list(lines), running.log_tail(), None, True)
                if remaining <= 0:
                    running.kill()
                    return Outcome(True, -9, list(lines), running.log_tail(), None)
                try:
                    batch = running.poll(min(remaining, step))
                except ChannelViolation as violation:
                    running.kill()
                    return Outcome(False, -9, list(lines), running.log_tail(), str(violation))
                if batch is None:
                    break
                lines.extend(batch)
            while True:  # the channel is closed; the program may live on a while
                remaining = max(0.0, deadline - time.monotonic())
                try:
                    returncode = running.wait(min(remaining, step))
                    break
                except subprocess.TimeoutExpired:
                    if stop is not None and stop.is_set():
                        running.kill()
                        return Outcome(False, -9, list(lines), running.log_tail(), None, True)
                    if deadline - time.monotonic() <= 0:
                        running.kill()
                        return Outcome(True, -9, list(lines), running.log_tail(), None)
            # Whatever the program left behind goes with it (without namespaces too).
            running.kill()
            return Outcome(False, returncode, list(lines), running.log_tail(), None)
        finally:
            running.close()


_lock = threading.Lock()
_current = Sandbox()
_by_mode = {_current.mode: _current}  # one per mode: bwrap is probed once per process


def configure(mode: str) -> Sandbox:
    """Set the process-wide sandbox from the settings (``sandbox:``)."""
    global _current
    with _lock:
        _current = _by_mode.setdefault(mode, Sandbox(mode))
        return _current


def current() -> Sandbox:
    return _current
