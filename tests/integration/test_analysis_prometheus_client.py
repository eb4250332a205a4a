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
        self.redirect_to = ""


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
            if state.mode == "redirect":
                self.send_response(302)
                self.send_header("Location", state.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if state.mode == "drip":  # all but the last bytes at once, then one at a time
                body = json.dumps(ANSWER).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:-8])
                self.wfile.flush()
                for byte in body[-8:]:
                    time.sleep(0.5)
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                return
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


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(
        server: tuple[Server, str], tmp_path: Path) -> None:
    state, url = server
    elsewhere: list[str] = []

    class Collector(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            elsewhere.append(self.headers.get("Authorization", ""))
            body = json.dumps(ANSWER).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        state.mode = "redirect"
        state.redirect_to = f"http://127.0.0.1:{other.server_address[1]}/api/v1/query"
        with pytest.raises(QueryError) as raised:
            client(url, tmp_path, state).query("up")
    finally:
        other.shutdown()
        other.server_close()
    assert elsewhere == []
    assert "answered 302" in str(raised.value) and "redirect" in str(raised.value)


def test_an_answer_that_trickles_in_is_cut_off_at_the_timeout(
        server: tuple[Server, str], tmp_path: Path) -> None:
    state, url = server
    state.mode = "drip"  # each byte within the socket timeout, the whole answer beyond it
    with pytest.raises(QueryError) as raised:
        client(url, tmp_path, state, timeout=1.0).query("up")
    assert "timed out" in str(raised.value) and not raised.value.fatal


def test_a_query_ends_when_its_stop_event_is_set(server: tuple[Server, str],
                                                  tmp_path: Path) -> None:
    state, url = server
    state.mode = "hang"
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(QueryError) as raised:
        client(url, tmp_path, state, timeout=30.0).query("up", stop)
    assert "stopped" in str(raised.value)


def test_the_query_goes_through_the_proxy_the_environment_names(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As every HTTP client of the daemon does (reconciler/http_connections.py)."""
    asked: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            asked.append(self.path)
            body = json.dumps(ANSWER).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    try:
        value = PrometheusClient(PrometheusSettings("http://prometheus.invalid:9090")).query(
            "up")
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert value == 0.5
    assert asked == ["http://prometheus.invalid:9090/api/v1/query"]
