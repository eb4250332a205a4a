"""Notifications: the receivers ``reconciler.yaml`` names, fed by the events a pass publishes
(``events.Subscribers``). See docs/notifications.md.

:class:`Notifications` is one sink for all receivers: it filters each event by type and
target and queues it for every receiver that wants it, without waiting (delivery.py);
payloads are made on the receiver's thread (payloads.py). Secrets (a URL with a token, a
bearer token) are read from their files once, at start and on SIGHUP, and kept only in the
receiver's closure: never in a payload, a log line, the journal or status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from reconciler.errors import StalledError
from reconciler.events import Event, EventType
from reconciler.notify.delivery import Worker, post
from reconciler.notify.payloads import ALERT_EVENTS, READY_AGAIN, Alerts, Message, cloudevent, slack
from reconciler.settings import NotificationReceiver

KINDS = ("webhook", "slack", "alertmanager")
RESULTS = ("delivered", "retried", "failed", "dropped")
ALERTS_PATH = "/api/v2/alerts"
ResultHook = Callable[[str, str], None]  # (receiver kind, result)
log = logging.getLogger(__name__)


def _secret(path: Path, receiver: str, what: str) -> str:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "not text"
        raise StalledError(f"notification receiver {receiver}: cannot read its {what} file "
                           f"{path}: {why}", reason="NotificationSecretUnreadable") from None
    if not text:
        raise StalledError(f"notification receiver {receiver}: its {what} file {path} is "
                           "empty", reason="NotificationSecretUnreadable")
    return text


def _url(receiver: NotificationReceiver) -> str:
    url = receiver.url
    if receiver.url_file is not None:
        url = _secret(receiver.url_file, receiver.name, "URL")
    if url is None or not url.startswith(("http://", "https://")):
        raise StalledError(f"notification receiver {receiver.name}: its URL is not an "
                           "http(s) URL", reason="NotificationURLInvalid")
    if receiver.type == "alertmanager" and not url.rstrip("/").endswith(ALERTS_PATH):
        url = url.rstrip("/") + ALERTS_PATH
    return url


class Receiver:
    """One configured receiver: its filter, its payloads and its worker."""

    def __init__(self, spec: NotificationReceiver, result: ResultHook,
                 log: Callable[[str], None]) -> None:
        self.spec = spec
        url = _url(spec)
        bearer = _secret(spec.bearer_token_file, spec.name, "bearer token") \
            if spec.bearer_token_file is not None else None
        self._events = frozenset(EventType(name) for name in spec.events)
        if spec.type == "alertmanager" and not self._events:
            self._events = frozenset(ALERT_EVENTS)
        self._alerts = Alerts(spec.labels, spec.resend_seconds) \
            if spec.type == "alertmanager" else None

        def send(message: Message) -> None:
            post(url, message, timeout=spec.timeout_seconds, bearer=bearer)

        self.worker = Worker(spec.name, spec.type, send, queue_size=spec.queue_size,
                             per_minute=spec.per_minute, burst=spec.burst,
                             max_attempts=spec.max_attempts, result=result, log=log,
                             resend=self._alerts.resend if self._alerts else None,
                             resend_seconds=spec.resend_seconds)

    def wants(self, event: Event) -> bool:
        if self.spec.targets and event.target not in self.spec.targets:
            return False
        if self._alerts is not None and event.type in READY_AGAIN:
            return True  # an object Ready again resolves its alerts, whatever the filter
        return not self._events or event.type in self._events

    def render(self, event: Event) -> Message | None:
        if self._alerts is not None:
            return self._alerts.on_event(event, time.time())
        if self.spec.type == "slack":
            return slack(event)
        return cloudevent(event, self.spec.source)


class Notifications:
    """Every configured receiver, as one ``events.Sink``."""

    def __init__(self, receivers: tuple[NotificationReceiver, ...], *,
                 result: ResultHook = lambda kind, outcome: None,
                 log: Callable[[str], None] = log.warning) -> None:
        self.receivers = [Receiver(spec, result, log) for spec in receivers]
        for receiver in self.receivers:
            receiver.worker.start()

    def __call__(self, event: Event) -> None:
        for receiver in self.receivers:
            if receiver.wants(event):
                receiver.worker.offer(partial(receiver.render, event))

    def close(self, grace: float = 1.0) -> None:
        for receiver in self.receivers:
            receiver.worker.stop(grace / max(1, len(self.receivers)))
