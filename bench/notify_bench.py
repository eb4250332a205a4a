"""What notifications cost the pass, and how fast a healthy receiver is served.

Publish: the time the pass spends handing one event to three receivers (a webhook, a Slack
receiver filtered out by event type, an Alertmanager that hangs), against an anchor
measured in the same run: appending the event to a list (the least a sink can do).
Delivery: events per second to a webhook on 127.0.0.1 that answers at once, with the rate
limit set out of the way, against an anchor: bare HTTP POSTs by http.client to the same
receiver.

Targets: publish <= 20 µs per event whatever the receivers do; delivery >= 0.5x bare POSTs.
Run: ``.venv/bin/python bench/notify_bench.py [--events 20000] [--deliveries 500]``.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from report import finish

from reconciler.events import Event, EventType
from reconciler.notify import Notifications
from reconciler.settings import NotificationReceiver


class Counting(BaseHTTPRequestHandler):
    hang = threading.Event()
    seen = 0
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.startswith("/hang"):
            Counting.hang.wait(600)
        with Counting.lock:
            Counting.seen += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--deliveries", type=int, default=500)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    event = Event(EventType.PROMOTED, "edge", "main@sha1:" + "a" * 40, "Model", "policy",
                  digest="b" * 64, message="pointer flipped")

    anchor: list[Event] = []
    started = time.perf_counter()
    for _ in range(args.events):
        anchor.append(event)
    anchor_us = (time.perf_counter() - started) / args.events * 1e6

    publishing = Notifications((
        NotificationReceiver("hook", "webhook", url=url + "/hang", queue_size=100),
        NotificationReceiver("chat", "slack", url=url + "/x", events=("rolled-back",)),
        NotificationReceiver("am", "alertmanager", url=url + "/hang")), log=lambda line: None)
    started = time.perf_counter()
    for _ in range(args.events):
        publishing(event)
    publish_us = (time.perf_counter() - started) / args.events * 1e6
    Counting.hang.set()
    publishing.close()

    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    Counting.seen = 0
    started = time.perf_counter()
    for _ in range(args.deliveries):
        connection.request("POST", "/bare", body=b"{}",
                           headers={"Content-Type": "application/json"})
        connection.getresponse().read()
        connection.close()
    bare_per_second = args.deliveries / (time.perf_counter() - started)

    Counting.seen = 0
    delivering = Notifications((NotificationReceiver(
        "hook", "webhook", url=url + "/fast", queue_size=args.deliveries,
        per_minute=1e9, burst=args.deliveries),), log=lambda line: None)
    started = time.perf_counter()
    for _ in range(args.deliveries):
        delivering(event)
    while Counting.seen < args.deliveries and time.perf_counter() - started < 120:
        time.sleep(0.005)
    delivered_per_second = Counting.seen / (time.perf_counter() - started)
    delivering.close()
    server.shutdown()

    ratio = delivered_per_second / bare_per_second
    return finish({"publish_us_per_event": round(publish_us, 2),
                   "anchor_list_append_us": round(anchor_us, 3),
                   "publish_vs_append": round(publish_us / anchor_us, 1),
                   "delivered_per_second": round(delivered_per_second),
                   "bare_posts_per_second": round(bare_per_second),
                   "delivery_vs_bare": round(ratio, 2)},
                  {"publish <= 20 us per event with a hanging receiver": publish_us <= 20,
                   "delivery >= 0.5x bare POSTs": ratio >= 0.5})


if __name__ == "__main__":
    sys.exit(main())
