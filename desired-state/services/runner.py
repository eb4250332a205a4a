"""The example fleet's service: it runs gepetto with the delivered settings and model.

Delivered by reconciler to ``bin/runner.py`` under each target's root, and driven by the
restart and health commands of the example's documents (run in the target's root):

    python3 bin/runner.py restart   stop the running server (if any), start a new one
    python3 bin/runner.py health    exit 0 when the server answers /healthz with 200
    python3 bin/runner.py stop

The server loads ``strategies/gepetto.py`` when it starts and runs it on a sample of
chutes; it re-reads ``config/gepetto.json`` on every request (settings reload without a
restart) and follows the canonical model pointer ``models/canonical_connect4.pt``.
/healthz answers 503 when anything that is present fails to load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.dont_write_bytecode = True  # keep the fleet tree exactly as delivered
ROOT = Path.cwd()
RUN = ROOT / "run"
PID_FILE, PORT_FILE, LOG_FILE = RUN / "runner.pid", RUN / "runner.port", RUN / "runner.log"
STRATEGY = ROOT / "strategies" / "gepetto.py"
CONFIG = ROOT / "config" / "gepetto.json"
MODEL = ROOT / "models" / "canonical_connect4.pt"


def load_strategy() -> dict[str, object]:
    """Import gepetto and make one decision with it; raises if it cannot."""
    if not STRATEGY.exists():
        return {"strategy": None}
    spec = importlib.util.spec_from_file_location("gepetto", STRATEGY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gepetto"] = module
    spec.loader.exec_module(module)
    thresholds = module.Thresholds(0.5, 0.8, 0.2, 4)
    sample = [module.Chute("sample", "h100", 3.0, 1.0, 1, 0.9)]
    decisions = module.select_chutes(sample, {"h100": 1}, thresholds)
    return {"strategy": hashlib.sha256(STRATEGY.read_bytes()).hexdigest(),
            "sampleDecision": decisions[0].action}


def current_state(strategy: dict[str, object]) -> dict[str, object]:
    state = dict(strategy)
    if CONFIG.exists():
        state["config"] = json.loads(CONFIG.read_text())["thresholds"]
    if MODEL.is_symlink() or MODEL.exists():
        state["model"] = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    return state


def serve() -> None:
    try:
        strategy: dict[str, object] | Exception = load_strategy()
    except Exception as error:  # reported by /healthz rather than crashing the service
        strategy = error

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            try:
                if isinstance(strategy, Exception):
                    raise strategy
                body, status = json.dumps(current_state(strategy)), 200
            except Exception as error:
                body, status = json.dumps({"error": f"{type(error).__name__}: {error}"}), 503
            self.send_response(status if self.path == "/healthz" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    PORT_FILE.write_text(str(server.server_address[1]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def stop() -> None:
    try:
        pid = int(PID_FILE.read_text())
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    PORT_FILE.unlink(missing_ok=True)


def restart() -> int:
    RUN.mkdir(exist_ok=True)
    stop()
    PORT_FILE.unlink(missing_ok=True)
    with open(LOG_FILE, "ab") as log:
        process = subprocess.Popen([sys.executable, __file__, "serve"], cwd=ROOT,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True)
    PID_FILE.write_text(str(process.pid))
    for _ in range(250):
        if PORT_FILE.exists():
            return 0
        if process.poll() is not None:
            print(f"runner exited with {process.returncode}; see {LOG_FILE}")
            return 1
        time.sleep(0.02)
    print("runner did not start within 5s")
    return 1


def health() -> int:
    try:
        port = int(PORT_FILE.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            print(answer.read().decode())
            return 0
    except FileNotFoundError:
        print("runner is not running")
    except urllib.error.HTTPError as error:
        print(f"runner unhealthy: {error.read().decode()}")
    except OSError as error:
        print(f"runner unreachable: {error}")
    return 1


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "serve":
        serve()
    elif command in ("restart", "health", "stop"):
        sys.exit({"restart": restart, "health": health, "stop": lambda: stop() or 0}[command]())
    else:
        sys.exit("usage: runner.py restart|health|stop|serve")
