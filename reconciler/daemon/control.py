"""The daemon's control socket: how ``suspend``, ``resume`` and ``reconcile`` reach it.

Those commands first record the request in the journal (so it holds whether a daemon runs
or not: one that starts later reads it), then wake the daemon here. The socket is a Unix
stream socket in the daemon's runtime directory (``$RUNTIME_DIRECTORY`` under systemd,
else the state dir), mode 0600; its path is in ``daemon.json`` for the commands to find.
A caller is identified by ``SO_PEERCRED``: only root and the daemon's own uid may ask;
anyone else is refused and logged (the mode alone would do, until someone loosens it).

One request per connection: a line of JSON (at most ``MAX_REQUEST_BYTES``, read within
``READ_SECONDS`` in all, so a client that trickles bytes is cut off), one line of JSON
back. Connections are served on their own threads, at most ``MAX_CLIENTS`` at once; past
that a new one is closed at once. The pass loop never reads a socket: a flood of clients
costs threads and descriptors bounded here, never a pass.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 4096
MAX_REPLY_BYTES = 1 << 16
READ_SECONDS = 2.0
MAX_CLIENTS = 16
ERROR_LINES_PER_MINUTE = 5
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; longer paths go through /proc/self/fd

Handler = Callable[[dict[str, Any], int], dict[str, Any]]  # (request, caller's uid) -> reply


class NoDaemon(Exception):
    """Nobody listens on the control socket: no daemon runs with these settings."""


def runtime_socket(state_dir: Path) -> Path:
    """Where the daemon listens: its runtime directory under systemd, else the state dir."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return (Path(runtime) if runtime else state_dir) / SOCKET_NAME


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """``path`` as a socket address; a long one through its folder's descriptor."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, _address(path) as address:
        probe.settimeout(1.0)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
    return int(struct.unpack("3i", credentials)[1])


def _read_line(connection: socket.socket, limit: int, seconds: float) -> bytes:
    """One line within ``seconds`` in all; ValueError past ``limit`` bytes or the time."""
    deadline = time.monotonic() + seconds
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ValueError(f"no complete request within {seconds:.0f}s")
        connection.settimeout(remaining)
        try:
            chunk = connection.recv(limit + 1 - len(data))
        except TimeoutError:
            raise ValueError(f"no complete request within {seconds:.0f}s") from None
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError(f"request over {limit} bytes")
    return data.split(b"\n", 1)[0]


class ControlSocket:
    """The listening socket and its threads."""

    def __init__(self, path: Path, handle: Handler, *, own_uid: int | None = None,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.path = path
        self._handle = handle
        self._own_uid = os.getuid() if own_uid is None else own_uid
        self._slots = threading.BoundedSemaphore(max_clients)
        self._stop = threading.Event()
        self._errors = 0
        self._errors_since = time.monotonic()
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            if _answers(path):  # another daemon on this state dir: never take its socket
                raise OSError(errno.EADDRINUSE, "another daemon listens there")
            path.unlink()  # left by a daemon killed with -9
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # never connectable by others, not even for a moment
        try:
            with _address(path) as address:
                self._socket.bind(address)
        finally:
            os.umask(umask)
        os.chmod(path, 0o600)
        self._socket.listen(64)
        self._socket.settimeout(0.5)  # how soon stop() is noticed
        self._thread = threading.Thread(target=self._accept, name="control-socket",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _log(self, line: str) -> None:
        """At most a few lines a minute: a flood must not flood the log too."""
        with self._lock:
            now = time.monotonic()
            if now - self._errors_since > 60:
                self._errors, self._errors_since = 0, now
            self._errors += 1
            if self._errors > ERROR_LINES_PER_MINUTE:
                return
        log.warning(f"control socket: {line}")

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError as error:
                if self._stop.is_set():
                    return
                self._log(f"accept failed: {error}")
                time.sleep(0.1)  # EMFILE and the like: do not spin
                continue
            if not self._slots.acquire(blocking=False):
                self._log(f"{MAX_CLIENTS} requests are already being served; a new "
                          "connection was closed")
                connection.close()
                continue
            threading.Thread(target=self._serve, args=(connection,), name="control-client",
                             daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            reply = self._answer(connection)
            connection.settimeout(READ_SECONDS)
            connection.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as error:
            self._log(f"a client went away: {error}")
        finally:
            connection.close()
            self._slots.release()

    def _answer(self, connection: socket.socket) -> dict[str, Any]:
        uid = peer_uid(connection)
        if uid not in (0, self._own_uid):
            self._log(f"refused a request from uid {uid}: only root and uid {self._own_uid} "
                      "may control this daemon")
            return {"ok": False, "error": f"uid {uid} may not control this daemon (only root "
                    f"and uid {self._own_uid})"}
        try:
            request = json.loads(_read_line(connection, MAX_REQUEST_BYTES, READ_SECONDS))
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as error:
            self._log(f"a malformed request from uid {uid}: {error}")
            return {"ok": False, "error": f"malformed request: {error}"}
        try:
            return self._handle(request, uid)
        except Exception as error:  # a defect in a handler never ends the listener
            self._log(f"the request {request.get('op')!r} failed: {error!r}")
            return {"ok": False, "error": f"the daemon failed to handle it: {error}"}


def ask(path: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request, return the reply. NoDaemon when nobody listens at ``path``."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(min(timeout, 10.0))
        try:
            with _address(path) as address:
                client.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise NoDaemon(f"no daemon listens at {path} ({error.strerror})") from None
        client.sendall(json.dumps(request).encode() + b"\n")
        try:
            line = _read_line(client, MAX_REPLY_BYTES, timeout)
        except ValueError as error:
            return {"ok": False, "error": f"the daemon did not answer: {error}"}
    finally:
        client.close()
    if not line:
        return {"ok": False, "error": "the daemon closed the connection without an answer"}
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    return reply if isinstance(reply, dict) else {"ok": False, "error": "a malformed answer"}


class PassTickets:
    """``reconcile --wait``: a request takes a ticket; the first pass that starts after it
    answers it. The loop calls :meth:`starting` and :meth:`finished` around each pass."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._asked = 0
        self._running_for = 0  # the newest ticket the pass under way answers
        self._answered = 0
        self._last: tuple[str, str] = ("", "")

    def ask(self) -> int:
        with self._changed:
            self._asked += 1
            return self._asked

    def starting(self) -> None:
        with self._changed:
            self._running_for = self._asked

    def finished(self, result: str, line: str) -> None:
        with self._changed:
            self._answered, self._last = self._running_for, (result, line)
            self._changed.notify_all()

    def wait(self, ticket: int, timeout: float) -> tuple[str, str] | None:
        """(result, status line) of the pass that answered ``ticket``; None on timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._answered >= ticket, timeout):
                return None
            return self._last
