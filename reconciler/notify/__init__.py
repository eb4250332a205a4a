"""Notifications: the receivers ``reconciler.yaml`` names, fed by the events a pass publishes
(``events.Subscribers``). See docs/notifications.md.

:class:`Notifications` is one sink for all receivers: it filters each event by type and
target and queues it for every receiver that wants it, without waiting (delivery.py);
payloads are made on the receiver's thread (payloads.py). Secrets (a URL with a token, a
bearer token) are read from their files at start and on SIGHUP (the receivers are made
anew when the files changed: a rotated token), and kept only in the receiver's closure
(and as a hash, to tell a rotation): never in a payload, a log line, the journal or status.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from reconciler.errors import StalledError
from reconciler.events import Event, EventType
from reconciler.notify.delivery import Worker, post
from reconciler.notify.payloads import ALERT_EVENTS, RESOLVING, Alerts, Message, cloudevent, slack
from reconciler.plan.planner import ALL_TARGETS
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
    if not text.isprintable() or any(character.isspace() for character in text):
        # HTTP would refuse it in a header or a request line on every delivery.
        raise StalledError(f"notification receiver {receiver}: its {what} file {path} "
                           f"holds more than one word or line: it must hold the {what} alone",
                           reason="NotificationSecretUnreadable")
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


def _secrets(receiver: NotificationReceiver) -> tuple[str, str | None]:
    """Its URL and bearer token, read from their files now."""
    bearer = _secret(receiver.bearer_token_file, receiver.name, "bearer token") \
        if receiver.bearer_token_file is not None else None
    return _url(receiver), bearer


def _fingerprint(url: str, bearer: str | None) -> str:
    """Tells a rotated secret from the one held, without keeping a second copy of it."""
    return hashlib.sha256(f"{url}\0{bearer or ''}".encode()).hexdigest()


class Receiver:
    """One configured receiver: its filter, its payloads and its worker."""

    def __init__(self, spec: NotificationReceiver, result: ResultHook,
                 log: Callable[[str], None]) -> None:
        self.spec = spec
        url, bearer = _secrets(spec)
        self._fingerprint = _fingerprint(url, bearer)
        self._events = frozenset(EventType(name) for name in spec.events)
        if spec.type == "alertmanager" and not self._events:
            self._events = frozenset(ALERT_EVENTS)
        self._alerts = Alerts(spec.labels, spec.resend_seconds) \
            if spec.type == "alertmanager" else None

        def send(message: Message) -> None:
            post(url, message, timeout=spec.timeout_seconds, bearer=bearer,
                 stop=self.worker.stopping)

        self.worker = Worker(spec.name, spec.type, send, queue_size=spec.queue_size,
                             per_minute=spec.per_minute, burst=spec.burst,
                             max_attempts=spec.max_attempts, result=result, log=log,
                             resend=self._alerts.resend if self._alerts else None,
                             resend_seconds=spec.resend_seconds)

    def rotated(self) -> bool:
        """Whether its secret files now hold something else (or cannot be read)."""
        try:
            return _fingerprint(*_secrets(self.spec)) != self._fingerprint
        except StalledError:
            return True

    def wants(self, event: Event) -> bool:
        if self.spec.targets and event.target not in self.spec.targets \
                and event.target != ALL_TARGETS:  # the whole fleet's suspension stops them too
            return False
        if self._alerts is not None and event.type in RESOLVING:
            return True  # an object Ready again resolves its alerts, whatever the filter
        return not self._events or event.type in self._events

    def take(self, event: Event) -> None:
        """Queue what ``event`` means to this receiver; never waits. An Alertmanager's
        alerts change now and one post, queued once, carries every change since the last."""
        alerts = self._alerts
        if alerts is None:
            self.worker.offer(partial(self.render, event))
        elif alerts.on_event(event, time.time()):
            self.worker.offer(lambda: alerts.pending(time.time()))

    def render(self, event: Event) -> Message:
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
                receiver.take(event)

    def rotated(self) -> bool:
        """Whether a receiver's secret files changed since they were read (SIGHUP)."""
        return any(receiver.rotated() for receiver in self.receivers)

    def close(self, grace: float = 1.0) -> None:
        for receiver in self.receivers:
            receiver.worker.stop(grace / max(1, len(self.receivers)))
