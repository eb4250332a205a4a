"""The control socket's bounds, with real Unix sockets: what a hostile or broken local
client can cost (never a pass: the loop never reads the socket)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from reconciler.daemon import control
from reconciler.daemon.control import ControlSocket, PassTickets, ask


def _served(tmp_path: Path, **kwargs: Any) -> tuple[ControlSocket, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def handle(request: dict[str, Any], uid: int) -> dict[str, Any]:
        seen.append(request)
        return {"ok": True, "uid": uid}

    server = ControlSocket(tmp_path / "control.sock", handle, **kwargs)
    server.start()
    return server, seen


def test_a_request_is_served_and_the_socket_is_the_owners_alone(tmp_path: Path) -> None:
    server, seen = _served(tmp_path)
    try:
        assert oct((tmp_path / "control.sock").stat().st_mode & 0o777) == "0o600"
        assert ask(server.path, {"op": "wake"}) == {"ok": True, "uid": os.getuid()}
        assert seen[0] == {"op": "wake"}
    finally:
        server.stop()
    assert not server.path.exists()
    try:
        ask(server.path, {"op": "wake"})
    except control.NoDaemon as error:
        assert "no daemon listens" in str(error)
    else:
        raise AssertionError("a stopped socket answered")


def test_a_live_socket_is_never_taken_over_and_a_stale_one_is(tmp_path: Path) -> None:
    server, _ = _served(tmp_path)
    try:
        with pytest.raises(OSError, match="another daemon listens there"):
            ControlSocket(server.path, lambda request, uid: {"ok": True})
        assert ask(server.path, {"op": "wake"})["ok"] is True, "the first one still serves"
    finally:
        server.stop()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(server.path))  # a daemon killed with -9 leaves its socket file
    stale.close()
    again, _ = _served(tmp_path)
    try:
        assert ask(again.path, {"op": "wake"})["ok"] is True
    finally:
        again.stop()


def test_a_path_longer_than_a_socket_address_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    server, _ = _served(deep)
    try:
        assert len(str(server.path)) > 108
        assert ask(server.path, {"op": "wake"})["ok"] is True
    finally:
        server.stop()


def test_oversized_and_malformed_requests_are_refused(tmp_path: Path) -> None:
    server, seen = _served(tmp_path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(server.path))
            client.sendall(b"x" * (control.MAX_REQUEST_BYTES + 10))
            assert b"over 4096 bytes" in client.recv(4096)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(server.path))
            client.sendall(b"[1, 2]\n")
            assert b"a request is a JSON object" in client.recv(4096)
        assert seen == [], "the handler never saw them"
    finally:
        server.stop()


def test_silent_clients_are_cut_off_and_a_flood_is_closed_not_queued(tmp_path: Path) -> None:
    server, seen = _served(tmp_path, max_clients=4)
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(4)]
    try:
        for client in silent:
            client.connect(str(server.path))
        # Every slot is held by a client that says nothing: the next one is closed at once.
        threading.Event().wait(0.3)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            extra.settimeout(30)
            extra.connect(str(server.path))
            assert extra.recv(100) == b"", "closed, not left waiting"
        # Each silent client is cut off after READ_SECONDS in all; then requests are served.
        for client in silent:
            client.settimeout(30)
            assert b"no complete request within" in client.recv(4096)
        assert ask(server.path, {"op": "wake"})["ok"] is True
        assert seen == [{"op": "wake"}]
    finally:
        for client in silent:
            client.close()
        server.stop()


def test_a_wait_is_answered_by_the_first_pass_that_starts_after_it() -> None:
    tickets = PassTickets()
    tickets.starting()  # a pass under way before the request
    ticket = tickets.ask()
    tickets.finished("changed", "the pass that was under way")
    assert tickets.wait(ticket, 0.01) is None, "a pass that began before does not answer"
    tickets.starting()
    tickets.finished("converged", "the next pass")
    assert tickets.wait(ticket, 0.01) == ("converged", "the next pass")
