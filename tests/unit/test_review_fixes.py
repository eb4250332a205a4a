"""Faults a review found: each reproduced here, so it stays fixed."""

from __future__ import annotations

import random
import socket
import time
import urllib.request
from pathlib import Path

from reconciler.daemon.backoff import Backoff
from reconciler.daemon.httpd import ControlServer
from reconciler.daemon.metrics import Metrics
from reconciler.journal import Journal
from reconciler.vocabulary import JournalAction, Phase


def test_backoff_survives_days_of_failures_within_its_cap() -> None:
    backoff = Backoff(base=1.0, cap=300.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(5000)]  # ~1,024 ended the daemon
    assert max(delays) <= 300.0 and min(delays[20:]) >= 150.0


def test_finishing_an_interrupted_flip_is_not_a_second_promotion(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    key = ("edge", "Model", "policy")
    for finish in (False, True):  # the promotion, then its restart finished after a crash
        intent = journal.intent(JournalAction.FLIP, key, pass_id=1, revision="r",
                                detail={"drift": False, "finish": finish})
        journal.outcome(intent, Phase.DONE)
    assert len(journal.history(time.time()).promotions) == 1


def test_clients_that_trickle_their_headers_are_evicted_like_idle_ones() -> None:
    """A connection is busy only once its headers are in: header bytes sent one at a time
    (each within the read timeout) must not hold a slot past the cap."""
    metrics = Metrics()
    server = ControlServer("127.0.0.1:0", metrics, lambda: (True, "ok"), lambda: (True, "ok"),
                           None, lambda: None, max_connections=2, connection_timeout=30.0)
    server.start()
    host, port = server.address.rsplit(":", 1)
    clients = []
    try:
        for _ in range(8):
            client = socket.create_connection((host, int(port)), timeout=5)
            client.sendall(b"GET /healthz HTTP/1.0\r\nX-Slow: ")  # never a blank line
            clients.append(client)
            time.sleep(0.05)
        deadline = time.monotonic() + 2  # far inside the 30 s read timeout
        while server._http.open_connections() > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server._http.open_connections() <= 2
        with urllib.request.urlopen(f"http://{server.address}/healthz", timeout=5) as answer:
            assert answer.status == 200
    finally:
        for client in clients:
            client.close()
        server.stop()
