"""The daemon that runs passes (``run``; one pass is execute/passes.py).

The daemon runs one pass at a time in its main thread. A pass starts on a change to a
local repository's refs, a webhook, the poll interval for a remote, the periodic resync,
the end of a soak or backoff, or right after a pass that changed something (so that
downstream targets see what upstream ones just became). Transient faults back off
exponentially with jitter; a stalled source (bad signature, history rewrite) and invalid
desired state wait for a new commit. The fleet keeps its last good state throughout.

Between passes and during them, other threads listen: the control socket (control.py:
``suspend``, ``resume`` and ``reconcile`` wake the loop; a suspension ends the action under
way on its target) and the supersede watch (supersede.py: a newer commit ends the check
of content it replaces). They only set events; the pass itself runs here alone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import __version__
from reconciler.app import Connections, Wiring, confine_state_dir, watched
from reconciler.costs import plan_spend
from reconciler.daemon.backoff import Backoff
from reconciler.daemon.control import ControlSocket, PassTickets, TooManyWaiting, runtime_socket
from reconciler.daemon.httpd import MIN_SECRET_BYTES, ControlServer, GateRequest, PlanRequest
from reconciler.daemon.leadership import Leadership, leadership
from reconciler.daemon.liveness import Liveness, ProgressEvent, Watchdog
from reconciler.daemon.lock import FleetLock
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.passlog import log_pass
from reconciler.daemon.schedule import next_delay
from reconciler.daemon.sdnotify import Notifier
from reconciler.daemon.signals import relay_signals
from reconciler.daemon.supersede import SupersedeWatch
from reconciler.daemon.watch import RefWatcher
from reconciler.desired.documents import Target
from reconciler.diagnostics import InvalidInput
from reconciler.errors import ReconcilerError, StalledError, classify
from reconciler.events import Event, EventType, Subscribers
from reconciler.execute.executor import Hooks
from reconciler.execute.interrupts import ActionInterrupt, Cause, Running
from reconciler.feedback import forge_sinks
from reconciler.journal import Journal
from reconciler.logs import fields
from reconciler.notify import Notifications
from reconciler.passes import PassOutcome, render_planned, run_pass
from reconciler.plan.planner import ALL_TARGETS, Suspension
from reconciler.prcheck import plan_revision, run_gate
from reconciler.redaction import redact, redact_text
from reconciler.sandbox.memory import deny_write_execute_to_this_process
from reconciler.settings import Settings, load_settings
from reconciler.source.location import is_local_path
from reconciler.vocabulary import JournalAction, PassResult, Phase

if TYPE_CHECKING:
    from reconciler.kube.watch import DriftWatch

log = logging.getLogger(__name__)
PLAN_QUEUE_SECONDS = 60.0  # a plan request waits this long for the one before it


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode() + b"\n"


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
        # Signs of life of the pass loop: /healthz and the systemd watchdog (liveness.py).
        self._liveness = Liveness()
        self._first_pass_done = False
        self.metrics = Metrics()
        self.metrics.follow_liveness(self._liveness.alive)
        # Set by SIGTERM, and by a lost Lease: ends the pass in flight, undoing what it began.
        # Every look a step takes at it is a sign of life.
        self._pass_stop = ProgressEvent(self._liveness)
        self._gate_lock = threading.Lock()  # pull requests' gates run one at a time
        self._plan_lock = threading.Lock()  # and their plans
        self._connections: Connections | None = None  # made with the settings, in run()
        self._drift: DriftWatch | None = None
        # Who hears about events (reconciler/events.py): notifications (notify/), commit
        # statuses and revert proposals (feedback.py); each sink queues and works on its
        # own thread.
        self.events = Subscribers()
        self._notifications = Notifications(())
        self.events.add(lambda event: self._notifications(event))
        self._targets: tuple[str, ...] = ()  # named by the last desired state that loaded
        self._pass_problem: str | None = None  # why the last pass could not load it
        self._tickets = PassTickets()  # reconcile --wait
        self._running_lock = threading.Lock()
        self._running: tuple[Running, ActionInterrupt] | None = None
        self._suspended: dict[str, Suspension] = {}  # as last taken up (events, metric)
        self._suspensions_lock = threading.Lock()
        self._journal: Journal | None = None
        self._supersede: SupersedeWatch | None = None
        self._held: Leadership | None = None
        self._control_path: Path | None = None  # for daemon.json

    # Signals (relayed to a thread, signals.py): set flags and wake the loop; the loop does
    # the work.

    def _on_stop(self) -> None:
        self._stop.set()
        self._pass_stop.set()
        self._wake.set()

    def _gained(self) -> None:
        log.info("leader election: acquired the Lease; acting")
        self._wake.set()

    def _lost(self, why: str) -> None:
        log.warning(f"leader election: lost ({why}); stopping the pass in flight")
        self._pass_stop.set()
        self._wake.set()

    def _watch_for_drift(self, settings: Settings, targets: tuple[Target, ...]) -> None:
        """Self-heal: a change by someone else to a ConfigMap we manage starts a pass."""
        if not settings.kube.watch or (self._drift is None and not targets):
            return
        try:
            if self._drift is None:
                from reconciler.kube.watch import DriftWatch  # only with Kubernetes targets
                assert self._connections is not None
                self._drift = DriftWatch(self._connections(), self._drifted)
            self._drift.follow(targets)
        except Exception as error:
            outcome = classify(error)
            log.warning(f"drift watch unavailable ({outcome.reason}: {outcome.message}); hand "
                        "edits are healed at the next resync", extra=fields(reason=outcome.reason))

    def _drifted(self, what: str) -> None:
        log.info(f"drift: {what}; reconciling")
        self._wake.set()

    def _on_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def trigger(self) -> None:
        self._wake.set()
        if self._supersede is not None:
            self._supersede.poke()  # during a pass: a newer commit may supersede a check

    # The action under way (executor hooks) and what may end it from another thread.

    def _on_running(self, running: Running | None, interrupt: ActionInterrupt) -> None:
        with self._running_lock:
            self._running = None if running is None else (running, interrupt)

    def _current(self) -> Running | None:
        with self._running_lock:
            return self._running[0] if self._running is not None else None

    def _fire(self, running: Running, cause: Cause, why: str) -> bool:
        """End ``running`` if it is still the action under way."""
        with self._running_lock:
            if self._running is None or self._running[0] != running:
                return False
            self._running[1].fire(cause, why)
        log.info(why)
        self._wake.set()  # the pass is planned again at once
        return True

    def _suspension_ends(self, running: Running) -> None:
        held = self._suspended.get(running.target) or self._suspended.get(ALL_TARGETS)
        if held is not None:
            self._fire(running, Cause.SUSPENDED, f"{held.describe()}; the "
                       f"{running.kind}/{running.name} change under way was ended")

    def _take_up_suspensions(self) -> None:
        """Read the journal's suspensions (a ``suspend``/``resume`` woke us, or a pass
        ended): log, publish and count what changed; end an action under way on a newly
        suspended target. From the control socket's thread or the loop's."""
        if self._journal is None:
            return
        with self._suspensions_lock:
            now = self._journal.suspensions()
            before, self._suspended = self._suspended, now
        for name in sorted(now.keys() - before.keys()):
            held = now[name]
            log.warning(f"suspend: {held.describe()}")
            self.events.publish(Event(EventType.SUSPENDED, name, None, reason="Suspended",
                                      message=held.describe()))
        for name in sorted(before.keys() - now.keys()):
            shown = "the whole fleet" if name == ALL_TARGETS else name
            log.warning(f"resume: {shown} is no longer suspended")
            self.events.publish(Event(EventType.RESUMED, name, None, reason="Resumed",
                                      message=f"{shown} resumed"))
        self.metrics.suspended_targets.set(
            len(self._targets) if ALL_TARGETS in now
            else len(now.keys() & set(self._targets)))
        self.metrics.fleet_suspended.set(1 if ALL_TARGETS in now else 0)
        running = self._current()
        if running is not None:
            self._suspension_ends(running)

    def _control(self, request: dict[str, Any], uid: int) -> dict[str, Any]:
        """A request on the control socket (control.py), already journaled by its sender."""
        op = request.get("op")
        if op == "wake":  # suspend or resume: the journal says what
            self._take_up_suspensions()
            self._wake.set()
            return {"ok": True, "pid": os.getpid()}
        if op == "reconcile":
            held = self._held
            if held is not None and not held.leading:
                return {"ok": False, "error": f"this daemon is a standby ({held.describe()}); "
                        "the leader runs the passes"}
            ticket = self._tickets.ask()
            log.info(f"reconcile: a pass was asked for (uid {uid})")
            self._wake.set()
            if not request.get("wait"):
                return {"ok": True, "pid": os.getpid(), "queued": True}
            timeout = min(float(request.get("timeout") or 600), 3600.0)
            try:
                answered = self._tickets.wait(ticket, timeout)
            except TooManyWaiting as error:
                return {"ok": False, "error": str(error)}
            if answered is None:
                return {"ok": False, "error": f"no pass finished within {timeout:.0f}s"}
            return {"ok": True, "pid": os.getpid(), "result": answered[0],
                    "message": answered[1]}
        return {"ok": False, "error": f"unknown request {op!r}"}

    def _healthy(self) -> tuple[bool, str]:
        age = self._liveness.age()
        return (self._liveness.alive(), f"loop active {age:.0f}s ago")

    def _ready(self) -> tuple[bool, str]:
        return (self._first_pass_done, "first pass done" if self._first_pass_done
                else "first pass not finished")

    def run(self) -> int:
        settings = load_settings(self._config_file, self._overrides)
        self._connections = Connections(settings)
        self.metrics.set_sandbox(settings.sandbox)
        if not deny_write_execute_to_this_process():
            log.warning("this kernel cannot refuse writable-and-executable memory to the "
                        "daemon alone (PR_SET_MDWE, Linux 6.6+): running without it")
        lock = FleetLock(settings.fleet_root, "daemon", settings.allowed_roots)
        lock.acquire()
        self._fleet_lock = lock
        try:
            self._notifications = self._notifying(settings)
        except ReconcilerError:
            lock.release()
            raise
        journal = Journal(settings.journal_path)
        confine_state_dir(settings)
        wiring = Wiring(settings, connections=self._connections)
        wiring.store.sweep()  # before recovery writes: leftovers of a full disk go first
        interrupted = journal.recover()
        feedback = forge_sinks(settings, journal)
        for sink in feedback:
            self.events.add(sink)
        self._journal = journal
        self._suspended = journal.suspensions()  # in force already: said, not published again
        for suspension in self._suspended.values():
            log.warning(f"suspend: {suspension.describe()}")
        server = self._serve(settings, lambda request: self._gate(wiring, journal, request),
                             lambda rev: self._plan(wiring, journal, rev))
        control = self._control_socket(settings)
        relay_signals({signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop,
                       signal.SIGHUP: self._on_reload})
        self._supersede = SupersedeWatch(lambda: wiring.settings, self._current, self._fire,
                                         self._stop)
        self._supersede.start()
        self._log_start(settings, server)
        if settings.repo is not None and is_local_path(settings.repo):
            RefWatcher(Path(settings.repo), self.trigger, self._stop).start()
        self._control_path = control.path
        self._write_state(settings, server, "starting")
        if interrupted:
            journal.record(JournalAction.RECOVER, Phase.INFO,
                           detail={"interrupted": [e.id for e in interrupted]})
        held = leadership(settings, self._connections, self._stop, on_gained=self._gained,
                          on_lost=self._lost)
        self._held = held
        if held is not None:
            log.info(f"leader election: {held.elector.shown} as {held.elector.identity}")
        watchdog = None
        if self._notify.watchdog_interval is not None:
            watchdog = Watchdog(self._notify, self._liveness, self._notify.watchdog_interval)
            watchdog.start()
        try:
            if held is not None:
                held.start()
            self._loop(wiring, journal, server, held)
        finally:
            if watchdog is not None:
                watchdog.stop()
            self._notify.stopping("stopping")
            if self._drift is not None:
                self._drift.stop()
            if held is not None:
                held.stop()
            if server is not None:
                server.stop()
            control.stop()
            for sink in feedback:
                sink.worker.close()
            journal.close()
            self._notifications.close()
            lock.release()
            log.info("reconciler stopped. The fleet's services keep running: reconciler "
                     "delivers what they load and restarts them, it does not own their "
                     "lifetime (stop them with their own tools)")
        return 0

    def _gate(self, wiring: Wiring, journal: Journal, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /gate``: a pull request's gate, run here so that CI needs no fleet
        credentials, one at a time; the daemon's own code records the verdict."""
        with self._gate_lock:
            try:
                run = run_gate(wiring.settings, wiring.store, journal, request["model"],
                               rev=request.get("rev") or None,
                               artifact=request.get("artifact") or None, stop=self._stop)
            except InvalidInput as error:
                first = error.diagnostics[0].format() if error.diagnostics else ""
                return {"model": request["model"], "outcome": "error",
                        "reason": "InvalidDesiredState",
                        "message": f"the revision's desired state is invalid: {first}"}
            except Exception as error:
                outcome = classify(error)
                return {"model": request["model"], "outcome": "error",
                        "reason": outcome.reason, "message": outcome.message}
        log.log(logging.INFO if run.outcome == "passed" else logging.WARNING,
                f"gate {run.model} at {run.revision} for a pull request: {run.outcome} "
                f"({run.reason})", extra=fields(kind="Model", name=run.model,
                                               revision=run.revision, result=run.outcome,
                                               reason=run.reason, digest=run.digest))
        return run.to_json()

    def _plan(self, wiring: Wiring, journal: Journal, rev: str) -> tuple[int, bytes]:
        """``POST /plan``: the plan of a pull request's revision against the live fleet, so
        that CI can show it without fleet credentials. One at a time; read-only: its own
        Wiring (the pass's is not shared across threads), nothing executed, no repository
        code run."""
        if not self._plan_lock.acquire(timeout=PLAN_QUEUE_SECONDS):
            return 503, _json({"reason": "Busy", "message": "another plan is being made"})
        try:
            now = time.time()
            history = journal.history(now)
            planned, trusted = plan_revision(
                Wiring(wiring.settings, connections=self._connections), history, rev, now)
            spent = plan_spend(planned, journal, history, now)
            return 200, render_planned(planned, "json", trusted, spent=spent).encode()
        except InvalidInput as error:
            return 422, _json({"reason": "InvalidDesiredState", "message":
                               f"the revision's desired state is invalid ({len(error.diagnostics)}"
                               " errors)", "errors": [d.error_json() for d in error.diagnostics]})
        except Exception as error:
            outcome = classify(error)
            status = 404 if outcome.reason == "RevisionNotFound" else 503 \
                if outcome.transient else 500
            return status, _json({"reason": outcome.reason,
                                  "message": redact_text(outcome.message)})
        finally:
            self._plan_lock.release()

    def _serve(self, settings: Settings, on_gate: GateRequest,
               on_plan: PlanRequest) -> ControlServer | None:
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
            if len(secret) < MIN_SECRET_BYTES:
                # Anyone could guess a short one and trigger passes at will.
                raise StalledError(f"the webhook secret in {settings.webhook_secret_file} has "
                                   f"{len(secret)} bytes; at least {MIN_SECRET_BYTES} are "
                                   "needed (e.g. `openssl rand -hex 32 > FILE`)",
                                   reason="WebhookSecretTooShort")
        try:
            server = ControlServer(settings.listen, self.metrics, self._healthy, self._ready,
                                   secret, self.trigger, on_gate, on_plan)
        except OSError as error:
            raise StalledError(f"cannot listen on {settings.listen}: {error.strerror}; set "
                               "'listen' to a free address, or '' for none",
                               reason="ListenFailed") from None
        server.start()
        return server

    def _control_socket(self, settings: Settings) -> ControlSocket:
        path = runtime_socket(settings.state_dir)
        try:
            control = ControlSocket(path, self._control)
        except OSError as error:
            raise StalledError(f"cannot listen on the control socket {path}: "
                               f"{error.strerror}", reason="ControlSocketFailed") from None
        control.start()
        return control

    def _write_state(self, settings: Settings, server: ControlServer | None,
                     status: str) -> None:
        """``<stateDir>/daemon.json``: who runs, where it listens (HTTP, and the control
        socket ``suspend``/``resume``/``reconcile`` use), what it last said."""
        state = {"pid": os.getpid(), "listen": server.address if server else None,
                 "control": str(self._control_path) if self._control_path else None,
                 "status": status, "at": time.time()}
        path = settings.state_dir / "daemon.json"
        temporary = path.with_name(".daemon.json.tmp")
        try:
            temporary.write_text(json.dumps(state))
            os.replace(temporary, path)
        except OSError as error:  # a full disk: the STATUS line and the log still say it
            log.error(f"cannot write {path}: {error}")

    def _loop(self, wiring: Wiring, journal: Journal, server: ControlServer | None,
              held: Leadership | None) -> None:
        backoff = Backoff(base=1.0, cap=300.0)
        next_due = time.monotonic()
        last_line = ""
        while not self._stop.is_set():
            settings = wiring.settings
            wait = max(0.0, next_due - time.monotonic())
            self._liveness.beat(wait)  # asleep on a timer is alive
            triggered = self._wake.wait(wait)
            self._wake.clear()
            self._liveness.beat()
            if self._stop.is_set():
                break
            if self._reload:
                self._reload = False
                fresh = self._reloaded(settings)
                if fresh is not settings:
                    wiring.reload(fresh)
            if not triggered and time.monotonic() < next_due:
                continue
            if held is not None and not held.leading:
                # A standby never acts; the lease thread wakes us when we lead.
                self._watch_for_drift(settings, ())
                line = held.describe()
                next_due = time.monotonic() + settings.resync_seconds
                if line != last_line:
                    log.info(line)
                self._announce(line, line != last_line, settings, server)
                last_line = line
                continue
            self._pass_stop.clear()
            if self._stop.is_set():
                break
            self._fleet_lock.check()  # FleetLockLost: never act on a folder moved under us
            started = time.monotonic()
            self._tickets.starting()
            outcome = run_pass(wiring, journal, self._pass_stop, hooks=self._hooks())
            if outcome.revision is not None:
                self._targets = tuple(target.name for target in outcome.targets)
            self._take_up_suspensions()
            took = time.monotonic() - started
            self.metrics.observe_pass(outcome, took, _objects(journal))
            self.metrics.quarantined.inc(outcome.quarantined)
            self._liveness.beat()
            if outcome.revision is not None:  # the desired state loaded: it names the targets
                self._watch_for_drift(settings, watched(outcome.targets))
            self._tell_whole_pass(outcome)
            line = outcome.status_line()
            remote = settings.repo is not None and not is_local_path(settings.repo)
            delay = next_delay(outcome.result, resync=settings.resync_seconds,
                               poll=settings.interval_seconds if remote else None,
                               retry_in=outcome.retry_in,
                               backoff=backoff.next_delay()
                               if outcome.result is PassResult.TRANSIENT else 0.0)
            if outcome.result is PassResult.TRANSIENT:
                line += f"; retrying in {delay:.0f}s"
            else:
                backoff.reset()
            next_due = time.monotonic() + delay
            log_pass(outcome, took, delay)
            self._announce(line, line != last_line, settings, server)
            self._tickets.finished(outcome.result, line)
            last_line = line

    def _hooks(self) -> Hooks:
        return Hooks(rollback=lambda kind: self.metrics.rollbacks.labels(kind).inc(),
                     drift=lambda kind: self.metrics.drift_corrections.labels(kind).inc(),
                     progress=self._progress, event=self.events.publish,
                     gauntlet_games=lambda opponent, n:
                     self.metrics.gauntlet_games.labels(opponent).inc(n),
                     running=self._on_running)

    def _tell_whole_pass(self, outcome: PassOutcome) -> None:
        """A pass that could not even load the desired state (invalid, or a source that
        needs a person: a bad signature, a rewritten history) stalls every target: told
        once per problem, on the targets the last good state named, and told again
        (``applied``, InSync) when the desired state loads again."""
        if outcome.targets:
            self._targets = tuple(target.name for target in outcome.targets)
        problem = outcome.message \
            if outcome.result in (PassResult.INVALID, PassResult.STALLED) else None
        if problem == self._pass_problem or (problem is None and outcome.revision is None):
            return
        was, self._pass_problem = self._pass_problem, problem
        for target in self._targets:
            if problem is not None:
                self.events.publish(Event(
                    EventType.STALLED, target, outcome.revision, reason=(
                        "InvalidDesiredState" if outcome.result is PassResult.INVALID
                        else "SourceStalled"), message=redact_text(outcome.message)))
            elif was is not None:
                self.events.publish(Event(EventType.APPLIED, target, outcome.revision,
                                          reason="InSync",
                                          message="the desired state loads again"))

    def _notifying(self, settings: Settings) -> Notifications:
        """The settings' receivers, started; raises StalledError when a secret file
        cannot be read (at start: the daemon says so and exits; on SIGHUP: refused)."""
        return Notifications(settings.notifications,
                             result=lambda kind, result:
                             self.metrics.notifications.labels(kind, result).inc())

    def _announce(self, line: str, changed: bool, settings: Settings,
                  server: ControlServer | None) -> None:
        """The STATUS line and daemon.json (the log has its own lines): no URL credentials.
        An explicit opt-out of the sandbox stays in view on every line."""
        line = redact_text(line)
        if settings.sandbox == "none":
            line = f"[sandbox: none, repository code runs unconfined] {line}"
        if not self._first_pass_done:
            self._first_pass_done = True
            self._notify.ready(line)
        else:
            self._notify.status(line)
        if changed and settings.sandbox == "none":
            log.warning("repository code runs unconfined (sandbox: none)")
        self._write_state(settings, server, line)

    def _progress(self, text: str) -> None:
        self._liveness.beat()
        self._notify.status(text)

    def _reloaded(self, settings: Settings) -> Settings:
        """SIGHUP: new settings if they are valid; otherwise keep running on the old ones."""
        self._notify.reloading()
        fresh = self._reload_settings(settings)
        # systemd waits for READY=1 after RELOADING=1, whether the reload took or not.
        self._notify.ready("settings reloaded" if fresh is not settings
                           else "reload refused: running on the previous settings")
        return fresh

    def _reload_settings(self, settings: Settings) -> Settings:
        try:
            fresh = load_settings(self._config_file, self._overrides)
        except InvalidInput as error:
            log.error(f"reload refused, keeping the running settings:\n{error}")
            self._notify.status("reload refused: settings invalid")
            return settings
        if (fresh.fleet_root, fresh.allowed_roots, fresh.state_dir, fresh.listen, fresh.kube,
                fresh.leader_election) != (settings.fleet_root, settings.allowed_roots,
                                           settings.state_dir, settings.listen, settings.kube,
                                           settings.leader_election):
            log.error("reload refused: fleetRoot, allowedRoots, stateDir, listen, kubernetes "
                      "and leaderElection need a restart")
            return settings
        if fresh.notifications != settings.notifications or self._notifications.rotated():
            try:
                notifications = self._notifying(fresh)
            except ReconcilerError as error:
                log.warning("reload refused, keeping the running settings: %s", error)
                return settings
            self._notifications, old = notifications, self._notifications
            old.close()
        log.info("settings reloaded")
        self.metrics.set_sandbox(fresh.sandbox)
        return fresh


    def _log_start(self, settings: Settings, server: ControlServer | None) -> None:
        listen = server.address if server is not None else None
        repository = redact(settings.repo) if settings.repo is not None else None
        log.info(f"reconciler {__version__} starting: repository {repository or '-'} "
                 f"branch {settings.branch}, fleet root {settings.fleet_root}, listening on "
                 f"{listen or 'nothing'}, sandbox {settings.sandbox}",
                 extra=fields(version=__version__, repository=repository,
                              branch=settings.branch, listen=listen, sandbox=settings.sandbox))


def _objects(journal: Journal) -> list[dict[str, Any]] | None:
    """The journal's rows for the metrics; None when it cannot be read (a full disk): the
    pass has already said so, and the series keep what they last showed."""
    try:
        return journal.objects()
    except Exception:
        return None
