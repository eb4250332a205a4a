"""One reconcile pass (``apply``), and the daemon that runs passes (``run``).

The daemon runs one pass at a time in its main thread. A pass starts on a change to a
local repository's refs, a webhook, the poll interval for a remote, the periodic resync,
the end of a soak or backoff, or right after a pass that changed something (so that
downstream targets see what upstream ones just became). Transient faults back off
exponentially with jitter; a stalled source (bad signature, history rewrite) and invalid
desired state wait for a new commit. The fleet keeps its last good state throughout.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from reconciler import app
from reconciler.app import Connections, desired_cache, gauntlet_jobs, plan_pass
from reconciler.desired.cache import DesiredCache
from reconciler.desired.documents import Target
from reconciler.diagnostics import InvalidInput
from reconciler.errors import ReconcilerError, StalledError, TransientError
from reconciler.runtime.backoff import Backoff
from reconciler.runtime.executor import Executor, Hooks, PassReport
from reconciler.runtime.httpd import ControlServer
from reconciler.runtime.journal import Journal
from reconciler.runtime.leadership import Leadership
from reconciler.runtime.lock import FleetLock
from reconciler.runtime.metrics import Metrics
from reconciler.runtime.sdnotify import Notifier
from reconciler.runtime.watch import RefWatcher
from reconciler.settings import Settings, load_settings
from reconciler.source.location import is_local_path

if TYPE_CHECKING:
    from reconciler.kube.watch import DriftWatch

# A pass that holds the loop longer than this (soaks included) makes /healthz fail.
STALL_SECONDS = 30 * 60


@dataclass(frozen=True)
class PassOutcome:
    """How a pass ended: ``result`` is one of metrics.RESULTS."""

    result: str
    message: str
    revision: str | None = None
    report: PassReport | None = None
    retry_in: float | None = None  # seconds until a waiting action may run
    kube_targets: tuple[Target, ...] = ()  # what the daemon watches for drift

    def status_line(self) -> str:
        where = f"{self.revision.split('@')[0]}@{self.revision.split(':')[-1][:12]} " \
            if self.revision else ""
        return f"{where}{self.result}: {self.message}"


REPLANS = 3  # a pointer conflict re-reads and re-plans at most this often in one pass


def reconcile_once(settings: Settings, journal: Journal, stop: threading.Event, *,
                   hooks: Hooks | None = None, metrics: Metrics | None = None,
                   cache: DesiredCache | None = None,
                   connections: Connections | None = None) -> PassOutcome:
    """Fetch, validate, observe, plan and execute once. Never raises for bad input.
    ``connections`` gives the daemon's long-lived cluster clients (made on first use)."""
    started = time.monotonic()
    pass_id = journal.begin_pass(None)
    connect = connections or Connections(settings)
    jobs = gauntlet_jobs(settings, connect, stop)
    for _ in range(REPLANS):
        try:
            planned = plan_pass(settings, time.time(), journal.history(), cache, connect)
        except InvalidInput as error:
            first = error.diagnostics[0].format() if error.diagnostics else ""
            outcome = PassOutcome("invalid", f"{len(error.diagnostics)} errors in the desired "
                                  f"state, fleet unchanged; first: {first}")
        except TransientError as error:
            outcome = PassOutcome("transient", f"{error.reason}: {error}")
        except ReconcilerError as error:
            outcome = PassOutcome("stalled", f"{error.reason}: {error}")
        else:
            report = Executor(planned.fleet, journal, stop, hooks=hooks, kube=planned.kube,
                              gauntlet_jobs=jobs).execute(planned, pass_id)
            outcome = replace(_summarize(report, planned.plan.errors, all(
                seen.transient for seen in planned.observed.values() if seen.error)),
                kube_targets=tuple(t for t in planned.desired.targets.values()
                                   if not t.is_local))
            if report.replan and not stop.is_set():
                continue
        break
    journal.end_pass(pass_id, outcome.result, outcome.message, outcome.revision)
    if metrics is not None:
        _observe(metrics, outcome, time.monotonic() - started)
    return outcome


def _summarize(report: PassReport, errors: Mapping[str, str],
               errors_transient: bool = False) -> PassOutcome:
    """``errors_transient``: every target that could not be observed had an outage (API
    5xx, timeouts); the pass backs off instead of waiting for the resync."""
    counts = Counter(r.result for r in report.results)
    waits = [r.action.not_before for r in report.results
             if r.result == "waiting" and r.action.not_before]
    retry_in = max(0.0, min(waits) - time.time()) if waits else None
    parts = [f"{counts[name]} {name}" for name in ("applied", "in-sync", "rolled-back",
                                                    "failed", "blocked", "waiting", "skipped",
                                                    "conflict")
             if counts[name]]
    message = ", ".join(parts) or "nothing declared"
    problems = [r for r in report.results
                if r.result in ("rolled-back", "failed", "blocked", "conflict")]
    if problems:
        first = problems[0]
        message += (f"; {first.action.kind}/{first.action.name} on {first.action.target}: "
                    f"{first.message}")
    if errors:
        message += "; " + "; ".join(f"{t}: {e}" for t, e in errors.items())
    outage = (errors or problems) and (errors_transient or not errors) \
        and all(r.transient for r in problems)
    if outage and not report.stopped:
        result = "transient"
    elif report.stopped or problems or errors:
        result = "failed"
    elif counts["applied"]:
        result = "changed"
    elif counts["waiting"]:
        result = "waiting"
    else:
        result = "converged"
    return PassOutcome(result, message, report.revision, report, retry_in)


def _observe(metrics: Metrics, outcome: PassOutcome, seconds: float) -> None:
    metrics.reconcile_duration.observe(seconds)
    metrics.reconcile.labels(outcome.result).inc()
    now = time.time()
    if outcome.result in ("converged", "changed", "waiting"):
        metrics.last_success.set(now)
    report = outcome.report
    if report is None:
        return
    if report.count("applied"):
        metrics.last_applied.set(now)
    if outcome.result == "converged":
        metrics.last_applied_revision.info({"revision": report.revision})
    pending = Counter(r.action.reason or "" for r in report.results
                      if r.result in ("waiting", "blocked"))
    metrics.set_pending(dict(pending))


class Daemon:
    """``reconciler run``: reconcile until SIGTERM."""

    def __init__(self, config_file: Path | None, overrides: dict[str, str | None], *,
                 notifier: Notifier | None = None) -> None:
        self._config_file = config_file
        self._overrides = overrides
        self._notify = notifier or Notifier()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload = False
        self._heartbeat = time.monotonic()
        self._first_pass_done = False
        self.metrics = Metrics()
        # Set by SIGTERM, and by a lost Lease: ends the pass in flight, undoing what it began.
        self._pass_stop = threading.Event()
        self._connections: Connections | None = None  # made with the settings, in run()
        self._drift: DriftWatch | None = None

    # Signals: set flags and wake the loop; the loop does the work.

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()
        self._pass_stop.set()
        self._wake.set()

    def _gained(self) -> None:
        print("leader election: acquired the Lease; acting", flush=True)
        self._wake.set()

    def _lost(self, why: str) -> None:
        print(f"leader election: lost ({why}); stopping the pass in flight", flush=True)
        self._pass_stop.set()
        self._wake.set()

    def _watch_for_drift(self, settings: Settings, targets: tuple[Target, ...]) -> None:
        """Self-heal: a change by someone else to a ConfigMap we manage starts a pass."""
        if not settings.kube.watch or (self._drift is None and not targets):
            return
        if self._drift is None:
            from reconciler.kube.watch import DriftWatch  # only with Kubernetes targets
            assert self._connections is not None
            self._drift = DriftWatch(self._connections(), self._drifted)
        self._drift.follow(targets)

    def _drifted(self, what: str) -> None:
        print(f"drift: {what}; reconciling", flush=True)
        self._wake.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True
        self._wake.set()

    def trigger(self) -> None:
        self._wake.set()

    def _healthy(self) -> tuple[bool, str]:
        age = time.monotonic() - self._heartbeat
        return (age < STALL_SECONDS, f"loop active {age:.0f}s ago")

    def _ready(self) -> tuple[bool, str]:
        return (self._first_pass_done, "first pass done" if self._first_pass_done
                else "first pass not finished")

    def run(self) -> int:
        settings = load_settings(self._config_file, self._overrides)
        self._connections = Connections(settings)
        lock = FleetLock(settings.fleet_root, "daemon")
        lock.acquire()
        journal = Journal(settings.journal_path)
        interrupted = journal.recover()
        server = self._serve(settings)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        if settings.repo is not None and is_local_path(settings.repo):
            RefWatcher(Path(settings.repo), self.trigger, self._stop).start()
        self._write_state(settings, server, "starting")
        if interrupted:
            journal.record("recover", "info", detail={"interrupted": [e.id for e in interrupted]})
        leadership = app.leadership(settings, self._connections, self._stop,
                                    on_gained=self._gained, on_lost=self._lost)
        if leadership is not None:
            print(f"leader election: {leadership.elector.shown} as "
                  f"{leadership.elector.identity}", flush=True)
        try:
            if leadership is not None:
                leadership.start()
            self._loop(settings, journal, server, leadership)
        finally:
            self._notify.stopping("stopping")
            if self._drift is not None:
                self._drift.stop()
            if leadership is not None:
                leadership.stop()
            if server is not None:
                server.stop()
            journal.close()
            lock.release()
        return 0

    def _serve(self, settings: Settings) -> ControlServer | None:
        if settings.listen is None:
            return None
        secret = None
        if settings.webhook_secret_file is not None:
            try:
                secret = settings.webhook_secret_file.read_bytes().strip()
            except OSError as error:
                raise StalledError(f"cannot read the webhook secret "
                                   f"{settings.webhook_secret_file}: {error.strerror}",
                                   reason="WebhookSecretUnreadable") from None
        try:
            server = ControlServer(settings.listen, self.metrics, self._healthy, self._ready,
                                   secret, self.trigger)
        except OSError as error:
            raise StalledError(f"cannot listen on {settings.listen}: {error.strerror}; set "
                               "'listen' to a free address, or '' for none",
                               reason="ListenFailed") from None
        server.start()
        return server

    def _write_state(self, settings: Settings, server: ControlServer | None,
                     status: str) -> None:
        """``<stateDir>/daemon.json``: who runs, where it listens, what it last said."""
        state = {"pid": os.getpid(), "listen": server.address if server else None,
                 "status": status, "at": time.time()}
        path = settings.state_dir / "daemon.json"
        temporary = path.with_name(".daemon.json.tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, path)

    def _loop(self, settings: Settings, journal: Journal, server: ControlServer | None,
              leadership: Leadership | None) -> None:
        backoff = Backoff(base=1.0, cap=300.0)
        cache = desired_cache(settings)  # read once; every pass adds to it in memory
        next_due = time.monotonic()
        last_line = ""
        while not self._stop.is_set():
            wait = max(0.0, next_due - time.monotonic())
            if self._notify.watchdog_interval is not None:
                wait = min(wait, self._notify.watchdog_interval)
            triggered = self._wake.wait(wait)
            self._wake.clear()
            self._heartbeat = time.monotonic()
            self._notify.watchdog()
            if self._stop.is_set():
                break
            if self._reload:
                self._reload = False
                settings = self._reloaded(settings)
            if not triggered and time.monotonic() < next_due:
                continue
            if leadership is not None and not leadership.leading:
                # A standby never acts; the lease thread wakes us when we lead.
                self._watch_for_drift(settings, ())
                line = leadership.describe()
                next_due = time.monotonic() + settings.resync_seconds
                self._announce(line, line != last_line, settings, server)
                last_line = line
                continue
            self._pass_stop.clear()
            if self._stop.is_set():
                break
            hooks = Hooks(rollback=lambda kind: self.metrics.rollbacks.labels(kind).inc(),
                          drift=lambda kind: self.metrics.drift_corrections.labels(kind).inc(),
                          progress=self._progress,
                          gauntlet_games=lambda opponent, n:
                          self.metrics.gauntlet_games.labels(opponent).inc(n))
            outcome = reconcile_once(settings, journal, self._pass_stop, hooks=hooks,
                                     metrics=self.metrics, cache=cache,
                                     connections=self._connections)
            self._heartbeat = time.monotonic()
            if outcome.revision is not None:  # the desired state loaded: it names the targets
                self._watch_for_drift(settings, outcome.kube_targets)
            line = outcome.status_line()
            if outcome.result == "transient":
                delay = backoff.next_delay()
                line += f"; retrying in {delay:.0f}s"
            else:
                backoff.reset()
                every = settings.resync_seconds
                if settings.repo is not None and not is_local_path(settings.repo):
                    every = min(every, settings.interval_seconds)
                delay = 0.0 if outcome.result == "changed" else every
                if outcome.retry_in is not None:
                    delay = min(delay, outcome.retry_in + 0.5)
            next_due = time.monotonic() + delay
            self._announce(line, line != last_line, settings, server)
            last_line = line

    def _announce(self, line: str, changed: bool, settings: Settings,
                  server: ControlServer | None) -> None:
        """The STATUS line, the log (when it changed) and daemon.json."""
        if not self._first_pass_done:
            self._first_pass_done = True
            self._notify.ready(line)
        else:
            self._notify.status(line)
        if changed:
            print(line, flush=True)
        self._write_state(settings, server, line)

    def _progress(self, text: str) -> None:
        self._heartbeat = time.monotonic()
        self._notify.status(text)

    def _reloaded(self, settings: Settings) -> Settings:
        """SIGHUP: new settings if they are valid; otherwise keep running on the old ones."""
        self._notify.reloading()
        try:
            fresh = load_settings(self._config_file, self._overrides)
        except InvalidInput as error:
            print(f"reload refused, keeping the running settings:\n{error}", flush=True)
            self._notify.status("reload refused: settings invalid")
            return settings
        if (fresh.fleet_root, fresh.state_dir, fresh.listen, fresh.kube,
                fresh.leader_election) != (settings.fleet_root, settings.state_dir,
                                           settings.listen, settings.kube,
                                           settings.leader_election):
            print("reload refused: fleetRoot, stateDir, listen, kubernetes and "
                  "leaderElection need a restart", flush=True)
            return settings
        print("settings reloaded", flush=True)
        return fresh

