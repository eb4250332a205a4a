"""Notifications with real parts: a real fleet's passes publish events, receivers on
127.0.0.1 record what they are sent (checked against schemas/notification-event.schema.json),
and receivers that fail, hang or flood are retried, bounded and rate-limited without ever
holding up a pass."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from reconciler.errors import StalledError
from reconciler.events import Event, EventType
from reconciler.execute.executor import Hooks
from reconciler.notify import Notifications
from reconciler.notify.delivery import DeliveryFailed, TokenBucket, post
from reconciler.notify.payloads import Message
from reconciler.settings import NotificationReceiver, load_settings
from tests.conftest import REPO_ROOT
from tests.e2e.daemon import wait_until
from tests.fleet import Fleet, sha
from tests.receivers import Receiver, receiving

EVENT_SCHEMA = Draft202012Validator(
    json.loads((REPO_ROOT / "schemas" / "notification-event.schema.json").read_text()),
    format_checker=FormatChecker())
URL_TOKEN = "url-token-5f1d2c"
BEARER = "bearer-token-9a8b7c"


def _spec(receiver: Receiver, tmp_path: Path, kind: str = "webhook",
          **fields: Any) -> NotificationReceiver:
    url_file = tmp_path / f"{kind}-url"
    url_file.write_text(f"{receiver.url}/hook?token={URL_TOKEN}\n")
    return NotificationReceiver(f"{kind}-receiver", kind, url_file=url_file, **fields)


class Results:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def __call__(self, kind: str, result: str) -> None:
        with self.lock:
            self.counts[(kind, result)] += 1


def test_a_pass_tells_a_webhook_what_happened_as_cloudevents_that_match_the_schema(
        tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    bearer_file = tmp_path / "bearer"
    bearer_file.write_text(BEARER + "\n")
    with receiving() as receiver:
        notifications = Notifications((_spec(receiver, tmp_path,
                                             bearer_token_file=bearer_file),))
        try:
            fleet.apply(Hooks(event=notifications))
            fleet.strategy("broken = True\n")  # its health check fails: rolled back
            bad = fleet.commit("a strategy that fails its health check")
            fleet.apply(Hooks(event=notifications))
            received = receiver.wait_for(6)
        finally:
            notifications.close()
    bodies = [r.json() for r in received]
    for request, body in zip(received, bodies, strict=True):
        assert request.headers["Content-Type"].startswith("application/cloudevents+json")
        assert request.headers["Authorization"] == f"Bearer {BEARER}"
        assert request.path == f"/hook?token={URL_TOKEN}"
        EVENT_SCHEMA.validate(body)
        assert URL_TOKEN not in request.body.decode() and BEARER not in request.body.decode()
    assert [(b["type"], b["subject"]) for b in bodies] == [
        ("reconciler.progressing", "Strategy/app on edge"),
        ("reconciler.applied", "Strategy/app on edge"),
        ("reconciler.progressing", "Model/policy on edge"),
        ("reconciler.promoted", "Model/policy on edge"),
        ("reconciler.progressing", "Strategy/app on edge"),
        ("reconciler.rolled-back", "Strategy/app on edge")]
    rolled = bodies[5]
    assert rolled["data"]["revision"].endswith(bad) and rolled["data"]["reason"] == "RolledBack"
    assert rolled["data"]["digest"] == sha(b"broken = True\n")
    assert "health check failed" in rolled["data"]["values"]["check"]
    assert bodies[3]["data"]["digest"] == sha(b"weights-v1")
    assert len({b["id"] for b in bodies}) == len(bodies)


def test_filters_by_event_and_target_and_slack_gets_text(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    with receiving() as slack, receiving() as elsewhere:
        notifications = Notifications((
            _spec(slack, tmp_path, "slack", events=("promoted", "rolled-back")),
            _spec(elsewhere, tmp_path, "webhook", targets=("production",)),
        ))
        try:
            fleet.apply(Hooks(event=notifications))
            [message] = slack.wait_for(1)
            notifications(Event(EventType.STALLED, "production", None, "Model", "policy",
                                message="cannot write https://user:pw@example.com/x"))
            [other] = elsewhere.wait_for(1)
        finally:
            notifications.close()
    text = message.json()["text"]
    assert "*promoted* Model/policy on edge" in text and "progressing" not in text
    assert message.json()["blocks"][0]["text"]["text"] == text
    assert len(slack.received) == 1  # applied and progressing were filtered out
    assert other.json()["subject"] == "Model/policy on production"
    assert "pw" not in other.body.decode() and "https://example.com/x" in other.body.decode()


def test_a_receiver_answering_500_is_retried_with_backoff_and_4xx_is_not(
        tmp_path: Path) -> None:
    results = Results()
    with receiving() as flaky, receiving() as refusing:
        flaky.failures = [500, 503]
        refusing.failures = [400, 400, 400]
        notifications = Notifications((_spec(flaky, tmp_path),
                                       _spec(refusing, tmp_path, "slack")), result=results)
        try:
            notifications(Event(EventType.PROMOTED, "edge", "main@sha1:" + "a" * 40,
                                "Model", "policy", digest="b" * 64))
            attempts = flaky.wait_for(3)
            refusing.wait_for(1)
        finally:
            notifications.close(grace=5)
    assert [a.json()["id"] for a in attempts] == [attempts[0].json()["id"]] * 3
    assert results.counts[("webhook", "retried")] == 2
    assert results.counts[("webhook", "delivered")] == 1
    assert results.counts[("slack", "failed")] == 1 and len(refusing.received) == 1


def test_a_hanging_receiver_holds_neither_the_pass_nor_more_than_its_queue(
        tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    results = Results()
    with receiving() as hanging:
        hanging.hang = threading.Event()
        notifications = Notifications((_spec(hanging, tmp_path, queue_size=2,
                                             timeout_seconds=30.0),), result=results)
        try:
            outcome = fleet.apply(Hooks(event=notifications))
            # The pass ended while the first delivery is still held by the receiver.
            assert outcome.result == "changed"
            assert not hanging.hang.is_set() and len(hanging.wait_for(1)) == 1
            for n in range(3):
                notifications(Event(EventType.STALLED, "edge", None, "Config", f"c{n}"))
        finally:
            hanging.hang.set()
            notifications.close(grace=5)
    # Seven events came: one is held by the receiver, the queue keeps the newest two.
    assert results.counts[("webhook", "dropped")] == 4


def test_a_token_bucket_spends_its_burst_then_paces() -> None:
    now = [0.0]
    bucket = TokenBucket(per_minute=60, burst=2, clock=lambda: now[0])
    for _ in range(2):
        assert bucket.wait_time() == 0
        bucket.take()
    assert bucket.wait_time() == pytest.approx(1.0)
    now[0] += 0.5
    assert bucket.wait_time() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.wait_time() == 0


def test_a_rate_limited_receiver_gets_its_burst_and_the_rest_waits(tmp_path: Path) -> None:
    results = Results()
    with receiving() as receiver:
        notifications = Notifications((_spec(receiver, tmp_path, per_minute=0.01, burst=2),),
                                      result=results)
        try:
            for n in range(4):
                notifications(Event(EventType.APPLIED, "edge", None, "Config", f"c{n}"))
            receiver.wait_for(2)
            worker = notifications.receivers[0].worker
            wait_until(lambda: worker.pending() == 1)  # one taken, waiting for a token
        finally:
            notifications.close()
    assert len(receiver.received) == 2
    assert results.counts[("webhook", "delivered")] == 2


def test_alertmanager_fires_on_a_stall_and_resolves_when_the_object_is_ready_again(
        tmp_path: Path) -> None:
    with receiving() as alertmanager:
        notifications = Notifications((NotificationReceiver(
            "am", "alertmanager", url=alertmanager.url, labels=(("cluster", "lab"),)),))
        try:
            notifications(Event(EventType.STALLED, "edge", None, "Model", "policy",
                                reason="DigestMismatch", message="digest mismatch"))
            alertmanager.wait_for(1)  # else the stall and its end are one post
            for event in (Event(EventType.PROMOTED, "edge", None, "Config", "other"),
                          Event(EventType.PROMOTED, "edge", None, "Model", "policy")):
                notifications(event)
            fired, resolved = alertmanager.wait_for(2)
        finally:
            notifications.close()
    assert fired.path == resolved.path == "/api/v2/alerts"
    [alert] = fired.json()
    assert alert["labels"] == {"alertname": "ReconcilerStalled", "target": "edge",
                               "kind": "Model", "name": "policy", "cluster": "lab"}
    assert alert["annotations"]["reason"] == "DigestMismatch"
    assert alert["endsAt"] > alert["startsAt"]
    [ended] = resolved.json()
    assert ended["labels"] == alert["labels"] and ended["endsAt"] <= alert["endsAt"]
    assert ended["startsAt"] == alert["startsAt"] and len(alertmanager.received) == 2


def test_receivers_in_reconciler_yaml_errors_name_file_and_line(tmp_path: Path) -> None:
    settings = tmp_path / "reconciler.yaml"
    settings.write_text("notifications:\n  receivers:\n    - name: chat\n      type: slack\n"
                        "      url: https://hooks.example.com/T/B/X\n"
                        "    - name: am\n      type: alertmanager\n"
                        "      url: http://admin:hunter2@am:9093\n"
                        "      events: [promoted, exploded]\n")
    with pytest.raises(Exception) as raised:
        load_settings(settings, {})
    text = str(raised.value)
    assert f"{settings}:3:7: notifications.receivers[0]: missing required field 'urlFile'" in text
    assert f"{settings}:8:12:" in text and "hunter2" not in text
    assert f"{settings}:9:" in text and "'exploded' is not allowed" in text
    settings.write_text("notifications:\n  receivers:\n    - name: am\n      type: alertmanager\n"
                        "      url: http://am:9093\n      rateLimit: {perMinute: 6, burst: 1}\n"
                        "      events: [stalled]\n      timeout: 3s\n")
    [receiver] = load_settings(settings, {}).notifications
    assert (receiver.per_minute, receiver.burst, receiver.events, receiver.timeout_seconds) \
        == (6, 1, ("stalled",), 3)


def test_a_stall_and_a_rejection_are_told_once_not_on_every_pass(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    events: list[Event] = []
    hooks = Hooks(event=events.append)
    fleet.apply(hooks)
    fleet.model(b"weights-v2", declared=sha(b"something else"))
    fleet.commit("a digest that does not match")
    for _ in range(3):
        fleet.apply(hooks)
    stalls = [e for e in events if e.type is EventType.STALLED]
    assert [(e.name, e.reason) for e in stalls] == [("policy", "DigestMismatch")]
    fleet.model(b"weights-v3")
    fleet.gate(["python3", "-c", "import json; print(json.dumps({'accuracy': 0.5}))"])
    fleet.commit("a model that misses its bar")
    for _ in range(2):
        fleet.apply(hooks)
    [rejected] = [e for e in events if e.type is EventType.REJECTED]
    assert rejected.digest == sha(b"weights-v3") and rejected.reason == "GateFailed"
    assert rejected.values["gate"] == "GateFailed"
    assert [e.type for e in events].count(EventType.PROMOTED) == 1


def test_an_answer_trickled_byte_by_byte_ends_at_the_timeout_and_is_retryable() -> None:
    """Each byte comes well within the read timeout; the whole answer may not take longer."""
    listener = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if release.wait(0.2):
                    return
                with contextlib.suppress(OSError):
                    connection.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        with pytest.raises(DeliveryFailed) as failed:
            post(f"http://127.0.0.1:{listener.getsockname()[1]}/", Message(b"{}", "a/b"),
                 timeout=1.0)
    finally:
        release.set()
        listener.close()
    assert failed.value.retryable and "timeout" in str(failed.value)


def test_a_spent_budget_is_told_once_with_the_revision_it_holds_back(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.write("budget.yaml", "apiVersion: reconciler/v1\nkind: Budget\nmetadata: {name: b}\n"
                "spec: {promotionsPerDay: 1}\n")
    fleet.commit("one promotion a day")
    events: list[Event] = []
    fleet.apply(Hooks(event=events.append))
    fleet.model(b"weights-v2")
    held = fleet.commit("a second promotion today")
    for _ in range(2):
        fleet.apply(Hooks(event=events.append))
    [spent] = [e for e in events if e.type is EventType.BUDGET_EXHAUSTED]
    assert (spent.kind, spent.name, spent.reason) == ("Model", "policy", "BudgetExhausted")
    assert spent.revision is not None and spent.revision.endswith(held)
    assert spent.digest == sha(b"weights-v2")


def test_an_alertmanager_storm_loses_no_alert_and_resumed_resolves_the_suspension(
        tmp_path: Path) -> None:
    """A thousand stalls while the Alertmanager is slow: every one fires, in one post (the
    queue holds one post of the whole state, so it never overflows); a resumption resolves
    the target's suspended alert and is never an alert itself."""
    with receiving() as alertmanager:
        alertmanager.hang = threading.Event()
        notifications = Notifications((NotificationReceiver(
            "am", "alertmanager", url=alertmanager.url, events=("stalled", "suspended"),
            queue_size=5),))
        try:
            def stall(number: int) -> Event:
                return Event(EventType.STALLED, "edge", None, "Config", f"c{number}",
                             reason="HealthCheckFailed", message="unhealthy")

            notifications(stall(0))
            alertmanager.wait_for(1)  # held by the receiver while the storm comes
            notifications(Event(EventType.SUSPENDED, "edge", None, reason="Suspended"))
            for number in range(1, 1000):
                notifications(stall(number))
            notifications(Event(EventType.RESUMED, "edge", None, reason="Resumed"))
            alertmanager.hang.set()
            first, second = alertmanager.wait_for(2)
        finally:
            notifications.close()
    assert len(first.json()) == 1 and len(alertmanager.received) == 2
    names = Counter(alert["labels"]["alertname"] for alert in second.json())
    assert names == {"ReconcilerStalled": 1000, "ReconcilerSuspended": 1}
    [suspended] = [a for a in second.json() if a["labels"]["alertname"] == "ReconcilerSuspended"]
    stalled = next(a for a in second.json() if a["labels"]["alertname"] == "ReconcilerStalled")
    assert suspended["labels"]["target"] == "edge" and suspended["endsAt"] < stalled["endsAt"]


def test_a_redirect_is_not_delivered_and_the_token_does_not_follow_it() -> None:
    """A receiver answering 307 toward another host has not taken the event: the delivery
    fails (final: the same request would be redirected again), nothing reaches the other
    host and the bearer token stays where it was sent."""
    with receiving() as internal:
        listener = socket.create_server(("127.0.0.1", 0))

        def redirect() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                                   f"{internal.url}/steal\r\nContent-Length: 0\r\n\r\n".encode())

        thread = threading.Thread(target=redirect, daemon=True)
        thread.start()
        try:
            with pytest.raises(DeliveryFailed) as failed:
                post(f"http://127.0.0.1:{listener.getsockname()[1]}/", Message(b"{}", "a/b"),
                     timeout=5.0, bearer=BEARER)
        finally:
            listener.close()
            thread.join(5)
    assert not failed.value.retryable and "307" in str(failed.value)
    assert BEARER not in str(failed.value) and internal.received == []


def test_a_receiver_that_echoes_its_secrets_does_not_get_them_into_the_log() -> None:
    """A receiver's error answer is shown (bounded) to say why it refused; one that repeats
    the request back (the bearer token, the URL's token in its query or its path, as a
    Slack webhook has it) must not put those in the log or the metric's reason."""
    listener = socket.create_server(("127.0.0.1", 0))
    slack_secret = "XbQ9T0k3nSecretPart"

    def echo() -> None:
        connection, _ = listener.accept()
        with connection:
            request = connection.recv(65536)
            body = b"refused: " + request.replace(b"\r\n", b" ")[:1500]
            connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        with pytest.raises(DeliveryFailed) as failed:
            post(f"http://127.0.0.1:{listener.getsockname()[1]}/services/T1/{slack_secret}"
                 f"?token={URL_TOKEN}", Message(b"{}", "a/b"), timeout=5.0, bearer=BEARER)
    finally:
        listener.close()
        thread.join(5)
    said = str(failed.value)
    assert "HTTP 403: refused" in said and not failed.value.retryable
    assert BEARER not in said and URL_TOKEN not in said and slack_secret not in said


def test_a_secret_file_with_more_than_the_secret_is_refused_without_showing_it(
        tmp_path: Path) -> None:
    """A note under the token (when it was rotated) would go into the Authorization header,
    which HTTP refuses on every delivery: the daemon says so at start (or SIGHUP) instead."""
    token_file = tmp_path / "token"
    token_file.write_text(f"{BEARER}\n# rotated 2026-11-01\n")
    with pytest.raises(StalledError, match="must hold the bearer token alone") as refused:
        Notifications((NotificationReceiver("audit", "webhook", url="http://127.0.0.1:9/",
                                            bearer_token_file=token_file),))
    assert BEARER not in str(refused.value) and str(token_file) in str(refused.value)
