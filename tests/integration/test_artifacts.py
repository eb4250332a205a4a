"""Artifacts: files and bundles verified, fetched over real HTTP, loaded safely."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.artifacts.fetch import ArtifactMissing, ArtifactUnavailable, FetchLimits, fetch
from reconciler.digests import DigestCache, VerificationFailed, verify_path, write_manifest
from reconciler.store import Store

PAYLOAD = os.urandom(3 << 20) + b"end"
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def no_repo(path: str) -> bytes:
    raise AssertionError("not a repository path")


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "bundle"
    (root / "checkpoints").mkdir(parents=True)
    (root / "router_head.safetensors").write_bytes(b"head" * 1000)
    (root / "checkpoints" / "step-1.safetensors").write_bytes(b"step" * 2000)
    return root, write_manifest(root)


def _store(root: Path) -> Store:
    return Store(root, DigestCache())


def test_bundle_verifies_and_every_kind_of_tampering_is_named(
        bundle: tuple[Path, str], tmp_path: Path) -> None:
    root, digest = bundle
    assert verify_path(root, digest) == "bundle"
    (root / "extra.bin").write_bytes(b"smuggled")
    with pytest.raises(VerificationFailed, match=r"not listed extra\.bin"):
        verify_path(root, digest)
    (root / "extra.bin").unlink()
    (tmp_path / "outside").write_bytes(b"x")
    os.symlink(tmp_path / "outside", root / "checkpoints" / "escape")
    with pytest.raises(VerificationFailed, match="symlink leading out"):
        verify_path(root, digest)
    (root / "checkpoints" / "escape").unlink()
    (root / "router_head.safetensors").write_bytes(b"HEAD" * 1000)  # same size, new content
    with pytest.raises(VerificationFailed, match=r"router_head\.safetensors: sha256 is"):
        verify_path(root, digest)
    (root / "router_head.safetensors").unlink()
    with pytest.raises(VerificationFailed, match=r"missing router_head\.safetensors"):
        verify_path(root, digest)
    with pytest.raises(VerificationFailed, match=r"manifest\.json: sha256 is"):
        verify_path(root, "0" * 64)


def test_digest_cache_makes_reverification_free_until_the_file_changes(
        tmp_path: Path) -> None:
    artifact = tmp_path / "model.pt"
    artifact.write_bytes(PAYLOAD)
    old = time.time() - 60
    os.utime(artifact, (old, old))
    cache = DigestCache()
    calls: list[int] = []
    verify_path(artifact, DIGEST, cache, progress=lambda done, total: calls.append(done))
    assert calls, "the first verification hashes"
    calls.clear()
    verify_path(artifact, DIGEST, cache, progress=lambda done, total: calls.append(done))
    assert calls == [], "an unchanged file is not hashed again"
    artifact.write_bytes(PAYLOAD[:-3] + b"END")
    with pytest.raises(VerificationFailed):
        verify_path(artifact, DIGEST, cache)


def test_verify_command_exit_codes(bundle: tuple[Path, str]) -> None:
    root, digest = bundle
    run = lambda *a: subprocess.run([sys.executable, "-m", "reconciler", "verify", *a],  # noqa: E731
                                    capture_output=True, text=True, check=False)
    assert run(str(root), "--sha256", digest).returncode == 0
    mismatch = run(str(root / "router_head.safetensors"), "--sha256", digest)
    assert mismatch.returncode == 1 and "mismatch" in mismatch.stdout
    assert run(str(root), "--sha256", digest.upper()).returncode == 1
    assert run(str(root / "absent"), "--sha256", digest).returncode == 1


class Server:
    """A real HTTP server with misbehaviours on demand."""

    def __init__(self) -> None:
        server = self
        self.mode = "ok"
        self.requests: list[str | None] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.headers.get("Range"))
                if server.mode in ("404", "500"):
                    self.send_error(int(server.mode))
                    return
                start = 0
                ranged = self.headers.get("Range")
                if ranged and server.mode != "ignore-range":
                    start = int(ranged.split("=")[1].rstrip("-"))
                    self.send_response(206)
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "truncate":
                    server.mode = "ok"
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if server.mode == "stall":
                    self.wfile.write(body[:1000])
                    self.wfile.flush()
                    time.sleep(3)
                    return
                self.wfile.write(body)

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/model.pt"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server()
    yield made
    made.http.shutdown()


def test_http_download_is_hashed_and_lands_read_only(server: Server, tmp_path: Path) -> None:
    seen: list[int] = []
    path = fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo,
                 progress=lambda done, total: seen.append(done))
    assert path == tmp_path / "sha256" / DIGEST and path.read_bytes() == PAYLOAD
    assert oct(path.stat().st_mode & 0o777) == "0o444"
    assert seen[-1] == len(PAYLOAD)
    assert fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo) == path
    assert len(server.requests) == 1, "already in the store: not fetched again"


def test_truncated_download_resumes_with_a_range_request(server: Server,
                                                         tmp_path: Path) -> None:
    server.mode = "truncate"
    with pytest.raises(ArtifactUnavailable, match="resumes from there"):
        fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo)
    assert not (tmp_path / "sha256" / DIGEST).exists()
    path = fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[1] is not None and server.requests[1].startswith("bytes=")


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.mode = "truncate"
    with pytest.raises(ArtifactUnavailable):
        fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo)
    server.mode = "ignore-range"
    assert fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo).read_bytes() == PAYLOAD


@pytest.mark.parametrize(("mode", "error", "text"), [
    ("404", ArtifactMissing, "answered 404"),
    ("500", ArtifactUnavailable, "answered 500"),
    ("stall", ArtifactUnavailable, "broke off after"),
])
def test_http_faults_never_reach_the_store(server: Server, tmp_path: Path, mode: str,
                                           error: type[Exception], text: str) -> None:
    server.mode = mode
    with pytest.raises(error, match=text):
        fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo,
              limits=FetchLimits(stall_seconds=1))
    assert not (tmp_path / "sha256" / DIGEST).exists()


def test_wrong_digest_and_size_limit(server: Server, tmp_path: Path) -> None:
    with pytest.raises(VerificationFailed, match="the repository declares"):
        fetch(server.url, "0" * 64, "torch", _store(tmp_path), no_repo)
    assert not list((tmp_path / "sha256").glob("*")) if (tmp_path / "sha256").exists() else True
    with pytest.raises(ArtifactMissing, match="over the limit"):
        fetch(server.url, DIGEST, "torch", _store(tmp_path / "small"), no_repo,
              limits=FetchLimits(max_bytes=1 << 20))


def test_bundle_from_a_directory_lands_whole_or_not_at_all(bundle: tuple[Path, str],
                                                           tmp_path: Path) -> None:
    root, digest = bundle
    store = tmp_path / "store"
    (root / "extra.bin").write_bytes(b"x")
    limits = FetchLimits(file_roots=(tmp_path,))
    with pytest.raises(VerificationFailed):
        fetch(f"file://{root}", digest, "bundle", _store(store), no_repo, limits=limits)
    assert not (store / "sha256" / digest).exists()
    (root / "extra.bin").unlink()
    landed = fetch(f"file://{root}", digest, "bundle", _store(store), no_repo, limits=limits)
    assert verify_path(landed, digest) == "bundle"


def test_code_carrying_pickle_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    script = (
        "import os, pickle, sys\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        f"pickle.dump({{'weight': Evil()}}, open({str(evil)!r}, 'wb'))\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    assert not marker.exists()
    loader = ("import sys; from pathlib import Path\n"
              "from reconciler.gauntlet.weights import UnsafeWeights, load_state_dict\n"
              "try:\n    load_state_dict(Path(sys.argv[1]))\n"
              "except UnsafeWeights as error:\n    print(error); sys.exit(3)\n")
    result = subprocess.run([sys.executable, "-c", loader, str(evil)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 3, result.stderr
    assert "not plain weights" in result.stdout
    assert not marker.exists(), "the pickle's code ran"
    good = tmp_path / "good.pt"
    subprocess.run([sys.executable, "-c", "import torch, sys; torch.save({'w': torch.ones(2)}, "
                    "sys.argv[1])", str(good)], check=True)
    ok = subprocess.run([sys.executable, "-c", loader.replace("load_state_dict(Path(sys.argv[1]))",
                         "print(sorted(load_state_dict(Path(sys.argv[1]))))"), str(good)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "['w']" in ok.stdout


class SlowServer:
    """Announces a huge body and sends one byte a second, or nothing at all (``silent``)."""

    def __init__(self, *, silent: bool = False) -> None:
        self.done = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 30))
                self.end_headers()
                self.wfile.flush()
                for _ in range(120):  # bounded: two minutes at most
                    if outer.done.wait(1.0):
                        return
                    if not silent:
                        self.wfile.write(b"x")
                        self.wfile.flush()

        outer = self
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/model.pt"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.done.set()
        self.http.shutdown()
        self.http.server_close()


def test_a_one_byte_a_second_server_is_given_up_at_the_deadline(tmp_path: Path) -> None:
    slow = SlowServer()
    try:
        started = time.monotonic()
        with pytest.raises(ArtifactUnavailable, match=r"gave up after 2s"):
            fetch(slow.url, DIGEST, "torch", _store(tmp_path), no_repo,
                  limits=FetchLimits(deadline_seconds=2))
        assert time.monotonic() - started < 4
    finally:
        slow.close()
    assert not (tmp_path / "sha256").exists() or not list((tmp_path / "sha256").iterdir())


@pytest.mark.parametrize("silent", [False, True])
def test_a_stop_request_ends_a_download_within_a_second(tmp_path: Path, silent: bool) -> None:
    slow = SlowServer(silent=silent)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    try:
        started = time.monotonic()
        with pytest.raises(ArtifactUnavailable, match="stopped"):
            fetch(slow.url, DIGEST, "torch", _store(tmp_path), no_repo, stop=stop,
                  limits=FetchLimits())
        assert time.monotonic() - started < 1.5, "a silent socket must not hold a stop"
    finally:
        slow.close()
    assert not list((tmp_path / "partial").iterdir()), "the partial file is removed"


def test_an_announced_size_over_the_limit_or_the_free_space_writes_nothing(
        server: Server, tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissing, match="over the limit of 1024 bytes"):
        fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo,
              limits=FetchLimits(max_bytes=1024))
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(ArtifactUnavailable, match=r"less than .* bytes free") as refused:
        fetch(server.url, DIGEST, "torch", _store(tmp_path), no_repo,
              limits=FetchLimits(reserve_bytes=free - len(PAYLOAD) // 2))
    assert refused.value.reason == "HostResourcesExhausted"
    assert not list((tmp_path / "partial").iterdir())


def test_file_artifacts_only_regular_files_beneath_the_roots(tmp_path: Path) -> None:
    """/dev/zero, a FIFO, a folder, a link out of the root and a secret outside the roots
    are refused before a byte is copied, and no message names the secret's digest."""
    roots = tmp_path / "artifacts"
    roots.mkdir()
    (roots / "model.pt").write_bytes(PAYLOAD)
    os.mkfifo(roots / "fifo")
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"hunter2-hunter2")
    os.symlink(secret, roots / "link.pt")
    limits = FetchLimits(file_roots=(roots, Path("/dev")))
    store = _store(tmp_path / "store")
    cases = {"/dev/zero": "not a regular file", str(roots / "fifo"): "not a regular file",
             str(roots): "folder", str(secret): "beneath the settings' artifacts.fileRoots",
             str(roots / "link.pt"): "beneath the settings' artifacts.fileRoots",
             str(roots / "absent.pt"): "does not exist"}
    for path, why in cases.items():
        started = time.monotonic()
        with pytest.raises(ArtifactMissing, match=why) as refused:
            fetch(f"file://{path}", "0" * 64, "torch", store, no_repo, limits=limits)
        assert time.monotonic() - started < 1, f"{path} blocked"
        assert hashlib.sha256(b"hunter2-hunter2").hexdigest() not in str(refused.value)
    assert not list((tmp_path / "store" / "partial").iterdir())
    with pytest.raises(ArtifactMissing, match="beneath"):
        fetch(f"file://{roots / 'model.pt'}", DIGEST, "torch", store, no_repo)
    with pytest.raises(ArtifactMissing, match="over the limit"):
        fetch(f"file://{roots / 'model.pt'}", DIGEST, "torch", store, no_repo,
              limits=FetchLimits(file_roots=(roots,), max_bytes=1 << 20))
    with pytest.raises(ArtifactMissing, match="over the limit"):
        fetch("models/big.pt", DIGEST, "torch", store, lambda path: PAYLOAD,
              limits=FetchLimits(max_bytes=1 << 20))
    landed = fetch(f"file://{roots / 'model.pt'}", DIGEST, "torch", store, no_repo,
                   limits=limits)
    assert landed.read_bytes() == PAYLOAD


def test_a_bundle_member_that_is_a_fifo_or_leads_out_is_refused(
        bundle: tuple[Path, str], tmp_path: Path) -> None:
    root, digest = bundle
    limits = FetchLimits(file_roots=(tmp_path,))
    head = root / "router_head.safetensors"
    head.unlink()
    os.mkfifo(head)
    with pytest.raises(ArtifactMissing, match="not a regular file"):
        fetch(f"file://{root}", digest, "bundle", _store(tmp_path / "s"), no_repo,
              limits=limits)
    head.unlink()
    os.symlink("/etc/hostname", head)
    with pytest.raises(ArtifactMissing, match=r"beneath|leads out"):
        fetch(f"file://{root}", digest, "bundle", _store(tmp_path / "s"), no_repo,
              limits=limits)
    assert not list((tmp_path / "s" / "partial").iterdir())


def test_a_download_goes_through_the_proxy_the_environment_names(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test server plays the proxy: it answers whatever absolute URL it is asked for."""
    monkeypatch.setenv("http_proxy", server.url.rsplit("/", 1)[0])
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.delenv("NO_PROXY", raising=False)
    path = fetch("http://artifacts.invalid/model.pt", DIGEST, "torch", _store(tmp_path),
                 no_repo)
    assert path.read_bytes() == PAYLOAD
