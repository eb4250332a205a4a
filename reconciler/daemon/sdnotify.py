"""systemd's notify protocol in plain Python: datagrams to $NOTIFY_SOCKET.

READY=1 after the first pass, STATUS= one line per pass, WATCHDOG=1 at half of
$WATCHDOG_USEC, STOPPING=1 on the way out. Without $NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping

from reconciler.redaction import redact_text


class Notifier:
    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        environment = os.environ if environment is None else environment
        address = environment.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@'.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        watchdog_pid = environment.get("WATCHDOG_PID")
        usec = environment.get("WATCHDOG_USEC")
        mine = watchdog_pid is None or watchdog_pid == str(os.getpid())
        self.watchdog_interval: float | None = (int(usec) / 2e6 if usec and usec.isdigit()
                                                and int(usec) > 0 and mine else None)

    def _send(self, message: str) -> None:
        if self._socket is None:
            return
        # Never block, never fail: with systemd gone or its queue full, a notification
        # is dropped rather than stopping the daemon (a blocking send would hang it).
        with contextlib.suppress(OSError):
            self._socket.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> None:
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        if self.watchdog_interval is not None:
            self._send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={_one_line(status)}")

    def reloading(self) -> None:
        self._send("RELOADING=1")


def _one_line(text: str) -> str:
    """A STATUS= value: one line, bounded, and no URL credentials (any user on the host can
    read it with ``systemctl status``)."""
    return " ".join(redact_text(text).split())[:400]
