"""Real Git servers on 127.0.0.1 for the credentials tests: ``git http-backend`` behind an
HTTP server that demands Basic auth, and an OpenSSH ``sshd`` that accepts one key.

Both serve bare repositories the test makes with the git CLI; both shut down with their
context, and every wait is bounded.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTTP_BACKEND = Path("/usr/lib/git-core/git-http-backend")


@dataclass
class HttpGitServer:
    """Serves ``root``'s bare repositories; only ``user:password`` gets in."""

    root: Path
    user: str
    password: str
    port: int = 0
    authorizations: list[str | None] = field(default_factory=list)  # as received, in order
    refused: int = 0

    def url(self, name: str, userinfo: str = "", query: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/{name}{query}"


def _handler(server: HttpGitServer) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{server.user}:{server.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: the test asserts on what it records

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._body()
            got = self.headers.get("Authorization")
            server.authorizations.append(got)
            if got != expected:
                server.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(server.root),
                   "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
                   "REQUEST_METHOD": self.command, "REMOTE_USER": server.user,
                   "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
            done = subprocess.run([str(HTTP_BACKEND)], input=body, env=env,
                                  capture_output=True, timeout=60, check=False)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(": ")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@contextmanager
def http_git_server(root: Path, user: str, password: str) -> Iterator[HttpGitServer]:
    served = HttpGitServer(root, user, password)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    served.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def sshd_available() -> bool:
    return shutil.which("sshd") is not None or Path("/usr/sbin/sshd").exists()


@dataclass(frozen=True)
class SshGitServer:
    port: int
    host_public_key: str  # '<type> <base64>', as a known_hosts line has it
    user: str

    def url(self, repository: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repository}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> str:
    """A fresh ed25519 key pair at ``path``; returns the public key '<type> <base64>'."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


@contextmanager
def sshd(workdir: Path, authorized_public_key: str) -> Iterator[SshGitServer]:
    """An sshd on 127.0.0.1 that lets the current user in with one key and nothing else."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "host_ed25519"
    host_public = keygen(host_key)
    authorized = workdir / "authorized_keys"
    authorized.write_text(authorized_public_key + "\n")
    authorized.chmod(0o600)
    port = _free_port()
    config = workdir / "sshd_config"
    config.write_text(f"""ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {workdir / 'sshd.pid'}
AuthorizedKeysFile {authorized}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # the privilege-separation directory
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    process = subprocess.Popen([binary, "-D", "-e", "-f", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                said = process.stderr.read() if process.stderr else b""
                raise AssertionError(f"sshd did not start: {said!r}")
            time.sleep(0.05)
        yield SshGitServer(port, host_public, pwd.getpwuid(os.getuid()).pw_name)
    finally:
        process.terminate()
        process.wait(timeout=10)
