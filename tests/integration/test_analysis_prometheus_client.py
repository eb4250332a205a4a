"""The Prometheus client against a real HTTPS server on 127.0.0.1: the CA file verifies it,
the bearer token is read from its file at each query and never shown, and a hostile server
(a huge answer, no answer) gets a bounded, clear error."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.analysis.prometheus import MAX_ANSWER_BYTES, PrometheusClient, QueryError
from reconciler.settings import PrometheusSettings

ANSWER = {"status": "success",
          "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0.5"]}]}}


class Server:
    def __init__(self, tmp_path: Path) -> None:
        self.cert, self.key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True)
        self.token = "s3cret-token"
        self.mode = "answer"
        self.seen: list[str] = []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    state = Server(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.seen_header = self.headers.get("Authorization", "")
            state.seen.append(self.seen_header)
            if state.mode == "hang":
                time.sleep(3)
            if self.seen_header != f"Bearer {state.token}":
                body, status = b"unauthorized", 401
            elif state.mode == "huge":
                body, status = b"[" + b" " * (MAX_ANSWER_BYTES + 10) + b"]", 200
            else:
                body, status = json.dumps(ANSWER).encode(), 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(state.cert, state.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"https://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def client(url: str, tmp_path: Path, server: Server, *, ca: bool = True,
           timeout: float = 5.0) -> PrometheusClient:
    token = tmp_path / "token"
    token.write_text(server.token + "\n")
    return PrometheusClient(PrometheusSettings(url, server.cert if ca else None, token,
                                               timeout))


def test_the_ca_file_verifies_the_server_and_the_token_is_sent(
        server: tuple[Server, str], tmp_path: Path) -> None:
    state, url = server
    assert client(url, tmp_path, state).query("up") == 0.5
    assert state.seen == ["Bearer s3cret-token"]


def test_a_rotated_token_is_used_at_the_next_query(server: tuple[Server, str],
                                                   tmp_path: Path) -> None:
    state, url = server
    prometheus = client(url, tmp_path, state)
    assert prometheus.query("up") == 0.5
    state.token = "rotated-token"
    (tmp_path / "token").write_text("rotated-token\n")
    assert prometheus.query("up") == 0.5
    assert state.seen[-1] == "Bearer rotated-token"


def test_a_refused_token_is_a_clear_error_that_never_shows_it(
        server: tuple[Server, str], tmp_path: Path) -> None:
    state, url = server
    prometheus = client(url, tmp_path, state)
    state.token = "another"
    with pytest.raises(QueryError) as raised:
        prometheus.query("up")
    assert "answered 401" in str(raised.value)
    assert "s3cret" not in str(raised.value) and not raised.value.fatal


def test_an_unknown_certificate_is_refused(server: tuple[Server, str], tmp_path: Path) -> None:
    state, url = server
    with pytest.raises(QueryError) as raised:
        client(url, tmp_path, state, ca=False).query("up")
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert state.seen == []  # the token never left before the server was verified


def test_a_huge_answer_is_cut_off(server: tuple[Server, str], tmp_path: Path) -> None:
    state, url = server
    state.mode = "huge"
    with pytest.raises(QueryError) as raised:
        client(url, tmp_path, state).query("up")
    assert raised.value.fatal and "more than" in str(raised.value)


def test_a_server_that_never_answers_times_out(server: tuple[Server, str],
                                               tmp_path: Path) -> None:
    state, url = server
    state.mode = "hang"
    with pytest.raises(QueryError) as raised:
        client(url, tmp_path, state, timeout=0.3).query("up")
    assert "timed out" in str(raised.value)
