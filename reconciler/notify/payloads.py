"""What each kind of receiver is sent for an event (pure: no I/O, no clock of its own).

- ``webhook``: one CloudEvents 1.0 event in structured mode
  (``application/cloudevents+json``), its ``data`` as ``schemas/notification-event.schema.json``
  documents it;
- ``slack``: a Slack-compatible incoming-webhook message (``text`` and ``blocks``; Mattermost
  and Rocket.Chat read ``text``);
- ``alertmanager``: a list of alerts for ``POST /api/v2/alerts``. Stateful: an alert fires
  on stalled, rolled-back, budget-exhausted (and any other event the receiver is set to
  hear, except the ones below) and is resolved, ``endsAt`` now, when the same object is Ready
  again (applied, promoted, drift-healed). Firing alerts are posted again every
  ``resendInterval`` with ``endsAt`` four intervals ahead, as Prometheus does, so an alert
  whose daemon is gone ends by itself. ``resumed`` resolves a target's ``suspended`` alert.
  The state changes as events arrive (:meth:`Alerts.on_event`, on the pass's thread) and
  one post carries all of it (:meth:`Alerts.pending`): a storm of a thousand stalls is one
  post, never a queue that overflows and loses alerts or their resolutions.

Every text passes through ``redact_text``: a URL's credentials in a message never leave.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.events import Event, EventType
from reconciler.redaction import redact_text

CLOUDEVENTS_TYPE_PREFIX = "reconciler."
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
MAX_MESSAGE_CHARS = 2000
MAX_VALUES = 32
# Events that say an object is Ready again: they resolve its alerts.
READY_AGAIN = frozenset({EventType.APPLIED, EventType.PROMOTED, EventType.DRIFT_HEALED})
RESOLVING = READY_AGAIN | {EventType.RESUMED}  # an Alertmanager hears these whatever it asks
ALERT_EVENTS = (EventType.STALLED, EventType.ROLLED_BACK, EventType.BUDGET_EXHAUSTED)
RESENDS_BEFORE_END = 4


@dataclass(frozen=True, slots=True)
class Message:
    body: bytes
    content_type: str


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    text = redact_text(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _values(values: Any) -> dict[str, Any]:
    """At most MAX_VALUES scalars; strings redacted and bounded; the rest shown as text."""
    shown: dict[str, Any] = {}
    for name, value in list(dict(values).items())[:MAX_VALUES]:
        if value is None or isinstance(value, (bool, int, float)):
            shown[str(name)] = value
        else:
            shown[str(name)] = _text(value if isinstance(value, str) else json.dumps(
                value, default=str, sort_keys=True), 200)
    return shown


def event_data(event: Event) -> dict[str, Any]:
    """The event as data: the ``data`` of a CloudEvent."""
    return {"type": str(event.type), "target": event.target, "kind": event.kind or None,
            "name": event.name or None, "revision": event.revision, "digest": event.digest,
            "reason": event.reason, "message": _text(event.message),
            "values": _values(event.values)}


def cloudevent(event: Event, source: str) -> Message:
    envelope = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source,
                "type": CLOUDEVENTS_TYPE_PREFIX + str(event.type), "time": rfc3339(event.time),
                "subject": event.subject, "datacontenttype": JSON_CONTENT_TYPE,
                "data": event_data(event)}
    return Message(json.dumps(envelope).encode(), CLOUDEVENTS_CONTENT_TYPE)


_EMOJI = {EventType.PROMOTED: ":rocket:", EventType.APPLIED: ":white_check_mark:",
          EventType.REJECTED: ":no_entry:", EventType.ROLLED_BACK: ":rewind:",
          EventType.STALLED: ":warning:", EventType.BUDGET_EXHAUSTED: ":hourglass:",
          EventType.DRIFT_HEALED: ":adhesive_bandage:"}


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(event: Event) -> Message:
    where = event.revision.split("@")[0] + "@" + event.revision.split(":")[-1][:12] \
        if event.revision else "-"
    headline = f"{_EMOJI.get(event.type, ':information_source:')} *{event.type}* " \
               f"{_escape(event.subject)} at `{_escape(where)}`"
    lines = [headline]
    if event.reason:
        lines.append(f"reason: {_escape(event.reason)}")
    if event.message:
        lines.append(_escape(_text(event.message)))
    values = _values(event.values)
    if values:
        lines.append(", ".join(f"{_escape(k)}={_escape(str(v))}" for k, v in values.items()))
    text = "\n".join(lines)
    return Message(json.dumps({"text": text, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]}).encode(),
        JSON_CONTENT_TYPE)


AlertKey = tuple[str, str, str, str]  # alertname, target, kind, name


def alert_name(event_type: EventType) -> str:
    return "Reconciler" + "".join(part.title() for part in str(event_type).split("-"))


class Alerts:
    """The alerts this daemon has firing at one Alertmanager, and what to post for them.
    Thread-safe: events change it on the publisher's thread, posts read it on the
    receiver's."""

    def __init__(self, labels: tuple[tuple[str, str], ...], resend_seconds: float) -> None:
        self._labels = dict(labels)
        self._resend = resend_seconds
        self._lock = threading.Lock()
        self._firing: dict[AlertKey, dict[str, Any]] = {}
        self._ended: list[dict[str, Any]] = []  # resolved since the last post
        self._unsent = False

    @property
    def firing(self) -> int:
        with self._lock:
            return len(self._firing)

    def on_event(self, event: Event, now: float) -> bool:
        """Take ``event`` in: its alert fires, or the object's (for ``resumed``: the
        target's suspension) alerts are resolved. True when a post became due that was not
        due already (the caller queues one)."""
        with self._lock:
            if event.type in READY_AGAIN or event.type is EventType.RESUMED:
                ended = [key for key in self._firing if (
                    key[1:] == (event.target, event.kind, event.name)
                    if event.type is not EventType.RESUMED
                    else key == (alert_name(EventType.SUSPENDED), event.target, "", ""))]
                self._ended += [{**self._firing.pop(key), "endsAt": rfc3339(now)}
                                for key in ended]
                changed = bool(ended)
            elif event.type is EventType.PROGRESSING:
                changed = False  # neither a problem nor its end
            else:
                key = (alert_name(event.type), event.target, event.kind, event.name)
                started = self._firing.get(key, {}).get("startsAt", rfc3339(event.time))
                self._firing[key] = {
                    "labels": {**self._labels, "alertname": key[0], "target": event.target,
                               **({"kind": event.kind, "name": event.name}
                                  if event.kind else {})},
                    "annotations": {"summary": f"{event.type}: {event.subject}",
                                    "description": _text(event.message),
                                    "reason": event.reason or "",
                                    "revision": event.revision or "",
                                    "digest": event.digest or ""},
                    "startsAt": started}
                changed = True
            due, self._unsent = changed and not self._unsent, self._unsent or changed
            return due

    def pending(self, now: float) -> Message | None:
        """What is to be posted since the last post: every firing alert and those resolved."""
        with self._lock:
            self._unsent = False
            ended, self._ended = self._ended, []
        return self.resend(now, ended)

    def resend(self, now: float, ended: list[dict[str, Any]] | None = None) -> Message | None:
        """Every firing alert, with ``endsAt`` pushed ahead, and ``ended`` as they are
        (None when there is nothing to post)."""
        ends = rfc3339(now + RESENDS_BEFORE_END * self._resend)
        with self._lock:
            alerts = [*(ended or []),
                      *({**alert, "endsAt": ends} for alert in self._firing.values())]
        return self._message(alerts) if alerts else None

    @staticmethod
    def _message(alerts: list[dict[str, Any]]) -> Message:
        return Message(json.dumps(alerts).encode(), JSON_CONTENT_TYPE)
