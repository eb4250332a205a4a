"""The ``reconciler`` command line. Exit codes are part of the contract (DESIGN.md §2)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from reconciler import __version__
from reconciler.app import (
    Connections,
    Wiring,
    configure_sandbox,
    confine_state_dir,
    git_source,
)
from reconciler.costs import plan_spend
from reconciler.daemon.daemon import Daemon
from reconciler.daemon.leadership import leadership
from reconciler.daemon.lock import FleetLock
from reconciler.desired.cache import DesiredCache
from reconciler.desired.loader import cache_salt, load_desired, located_warnings
from reconciler.diagnostics import InvalidInput
from reconciler.digests import VerificationFailed, verify_path, write_manifest
from reconciler.errors import ReconcilerError, StalledError
from reconciler.execute.executor import Hooks
from reconciler.gauntlet.budgets import budget_warnings, gate_costs
from reconciler.journal import Journal
from reconciler.local.roots import check_roots
from reconciler.passes import plan_pass, run_pass
from reconciler.plan.planner import Action, History, address_of
from reconciler.plan.render import render_json, render_text, text_diff
from reconciler.prcheck import GateRun, run_gate
from reconciler.sandbox.runner import SandboxUnavailable
from reconciler.settings import Settings, find_config_file, load_settings
from reconciler.source.directory import DirectorySnapshot
from reconciler.source.snapshot import Snapshot
from reconciler.vocabulary import JournalAction, Op, PassResult

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
_GATE_REQUEST_SECONDS = 3 * 3600  # a daemon-run gate may play for a long time
EXIT_CANNOT_CHECK = 3  # validate: no sandbox; gauntlet: the tool failed, not the model
# reconciler gauntlet: a CI can tell a model that missed its bar from a broken tool.
GATE_EXITS = {"passed": ("PASS", EXIT_OK), "rejected": ("FAIL", EXIT_ERROR),
              "inconclusive": ("INCONCLUSIVE", 2), "error": ("ERROR", EXIT_CANNOT_CHECK),
              "stopped": ("STOPPED", EXIT_CANNOT_CHECK), "blocked": ("BLOCKED", EXIT_CANNOT_CHECK)}
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for a tool whose reader left


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="a reconciler.yaml (default: "
                        "$RECONCILER_CONFIG, else ./reconciler.yaml if present)")
    parser.add_argument("--repo", metavar="PATH_OR_URL", help="the desired-state repository")
    parser.add_argument("--branch", help="the branch to follow (default main)")
    parser.add_argument("--path", help="the desired-state folder in the repository "
                        "(default desired-state)")
    parser.add_argument("--state-dir", metavar="DIR", help="mirror, caches and store")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconciler", description="Declarative GitOps "
                                     "reconciler for ML fleets.")
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check desired state: schemas, "
                                   "references, strategies (exit 0 valid, 1 invalid)")
    validate.add_argument("directory", nargs="?", metavar="DIR",
                          help="a plain desired-state folder (pre-commit); default: the "
                          "repository's branch")
    validate.add_argument("--rev", help="a revision of --repo to check (branch, tag, sha)")
    _common(validate)

    plan = commands.add_parser("plan", help="what a pass would do (exit 0 in sync, "
                               "2 changes, 1 error)")
    plan.add_argument("--output", choices=("text", "json"), default="text")
    _common(plan)

    apply = commands.add_parser("apply", help="one reconcile pass (exit 0 converged or "
                                "waiting on a soak or window, 1 error or blocked)")
    _common(apply)
    run = commands.add_parser("run", help="the daemon: reconcile until SIGTERM")
    _common(run)

    status = commands.add_parser("status", help="per-object state, last pass, blocked reasons")
    status.add_argument("--output", choices=("text", "json"), default="text")
    _common(status)
    history = commands.add_parser("history", help="the journal, optionally of one object")
    history.add_argument("name", nargs="?", help="an object's name")
    history.add_argument("--limit", type=int, default=50,
                         help="show at most this many events, the newest (default 50)")
    history.add_argument("--output", choices=("text", "json"), default="text")
    _common(history)

    gauntlet = commands.add_parser("gauntlet", help="run a model's gate without flipping "
                                   "anything, e.g. on a PR (exit 0 passed, 1 rejected, "
                                   "2 inconclusive, 3 error)")
    gauntlet.add_argument("model", metavar="MODEL")
    gauntlet.add_argument("--artifact", metavar="URI", help="test this artifact instead of "
                          "the declared one; its verdict is remembered under its digest")
    gauntlet.add_argument("--rev", help="the revision whose gauntlet spec to use")
    gauntlet.add_argument("--daemon", metavar="URL", help="ask the running daemon at URL "
                          "(its listen address) to run the gate: a CI needs no fleet "
                          "credentials, only the webhook secret (--secret-file)")
    gauntlet.add_argument("--secret-file", metavar="FILE", help="the webhook secret that "
                          "signs the request to --daemon (default: the settings' webhook)")
    gauntlet.add_argument("--retry", action="store_true", help="forget a remembered verdict "
                          "and run again")
    _common(gauntlet)

    verify = commands.add_parser("verify", help="verify a file or bundle against a sha256 "
                                 "(exit 0 ok, 1 mismatch)")
    verify.add_argument("artifact", metavar="PATH", help="a file, or a bundle directory")
    verify.add_argument("--sha256", required=True, metavar="HEX",
                        help="the digest, HEX or sha256:HEX (of manifest.json, for a bundle)")
    manifest = commands.add_parser("manifest", help="write manifest.json for a bundle "
                                   "directory and print the digest to pin")
    manifest.add_argument("directory", metavar="DIR")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, str | None]:
    return {"repo": args.repo, "branch": args.branch, "path": args.path,
            "stateDir": args.state_dir}


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with the sandbox they name configured for whatever runs next."""
    settings = load_settings(find_config_file(args.config), _overrides(args))
    configure_sandbox(settings)
    return settings


def _report_invalid(error: InvalidInput, stream: TextIO) -> int:
    for diagnostic in error.diagnostics:
        print(diagnostic.format(), file=stream)
    count = len(error.diagnostics)
    print(f"{count} error{'s' if count != 1 else ''}", file=stream)
    return EXIT_ERROR


def cmd_validate(args: argparse.Namespace) -> int:
    snapshot: Snapshot
    # With settings (a repository, or a folder with --config) the roots are checked too.
    settings = _settings(args) if args.directory is None or args.config else None
    if args.directory is not None:
        folder = Path(args.directory)
        if not folder.is_dir():
            print(f"{args.directory}: not a directory", file=sys.stderr)
            return EXIT_ERROR
        snapshot = DirectorySnapshot(folder.resolve(), args.directory.rstrip("/") + "/")
    else:
        assert settings is not None
        snapshot = git_source(settings).snapshot_at(args.rev or settings.branch)
    desired = load_desired(snapshot, DesiredCache(cache_salt()))
    problems = check_roots(desired, settings, snapshot.display_prefix) if settings else []
    if problems:
        raise InvalidInput(problems)
    for warning in located_warnings(snapshot, budget_warnings(desired.gauntlets.values())):
        print(warning.format())
    counts = {"targets": len(desired.targets), "strategies": len(desired.strategies),
              "configs": len(desired.configs), "models": len(desired.models),
              "gauntlets": len(desired.gauntlets), "budgets": len(desired.budgets)}
    listed = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    print(f"{snapshot.display_prefix or './'}: valid at {snapshot.revision} ({listed})")
    return EXIT_OK


def _history(settings: Settings, now: float) -> History:
    """The journal's memory, read-only: ``plan`` must plan what the daemon would."""
    with _read_journal(settings) as journal:
        return History() if journal is None else journal.history(now)


@contextlib.contextmanager
def _read_journal(settings: Settings) -> Iterator[Journal | None]:
    """The journal opened read-only, or None where the daemon never ran."""
    if not settings.journal_path.exists():
        yield None
        return
    journal = Journal(settings.journal_path, readonly=True)
    try:
        yield journal
    finally:
        journal.close()


def cmd_plan(args: argparse.Namespace) -> int:
    settings = _settings(args)
    now = time.time()
    with _read_journal(settings) as journal:
        history = History() if journal is None else journal.history(now)
        planned = plan_pass(Wiring(settings), history, now)
        spent = plan_spend(planned, journal, history, now)
    diffs: dict[Action, str | None] = {}
    for action in planned.plan.changes:
        if action.kind == "Model" or action.op in (Op.DELETE, Op.RECALL):
            continue
        target = planned.desired.targets[action.target]
        obj = (planned.desired.strategies.get(action.name) if action.kind == "Strategy"
               else planned.desired.configs.get(action.name))
        if obj is None:
            continue
        address = address_of(obj, target)
        old = None if action.current is None else planned.live_content(target, address)
        diffs[action] = text_diff(old, planned.desired.read_content(obj), address)
    locations = {name: seen.location for name, seen in planned.observed.items()}
    gauntlets = planned.desired.gauntlets
    costs = {model.name: gate_costs(gauntlets[model.gauntlet])
             for model in planned.desired.models.values()
             if model.gauntlet is not None and model.gauntlet in gauntlets}
    render = render_json if args.output == "json" else render_text
    sys.stdout.write(render(planned.plan, diffs, locations, costs, spent))
    if planned.plan.errors:
        return EXIT_ERROR
    return EXIT_OK if planned.plan.in_sync else EXIT_CHANGES


def cmd_apply(args: argparse.Namespace) -> int:
    settings = _settings(args)
    lock = FleetLock(settings.fleet_root, "apply", settings.allowed_roots)
    lock.acquire()
    connections = Connections(settings)
    done, stop = threading.Event(), threading.Event()
    held = leadership(settings, connections, done, on_gained=lambda: None,
                      on_lost=lambda why: stop.set())
    if held is not None:
        held.start()
        if not held.leading:
            print(f"{held.describe()}; waiting for it to expire", file=sys.stderr, flush=True)
        if not held.leading and not held.wait_leading():
            done.set()
            lock.release()
            print(f"{held.describe()}; another daemon acts on this fleet", file=sys.stderr)
            return EXIT_ERROR
    journal = Journal(settings.journal_path)
    try:
        confine_state_dir(settings)
        wiring = Wiring(settings, connections=connections)
        wiring.store.sweep()  # first: leftovers of a full disk must not block the journal
        journal.recover()
        outcome = run_pass(wiring, journal, stop, hooks=Hooks(progress=_progress_line))
    finally:
        journal.close()
        done.set()
        if held is not None:
            held.stop()
        lock.release()
    if outcome.report is not None:
        for result in outcome.report.results:
            action = result.action
            if result.result != "in-sync":
                print(f"{result.result:>11}  {action.target}  {action.kind}/{action.name}: "
                      f"{result.message}")
    print(outcome.status_line())
    return EXIT_OK if outcome.result in (PassResult.CONVERGED, PassResult.CHANGED,
                                         PassResult.WAITING) else EXIT_ERROR


def _progress_line(text: str) -> None:
    if sys.stderr.isatty():
        print(f"... {text}", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    return Daemon(find_config_file(args.config), _overrides(args)).run()


def _open_journal(args: argparse.Namespace) -> Journal:
    settings = _settings(args)
    if not settings.journal_path.exists():
        raise StalledError(f"no journal at {settings.journal_path}: nothing has been applied "
                           "with this state dir yet", reason="NoJournal")
    return Journal(settings.journal_path, readonly=True)


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def cmd_status(args: argparse.Namespace) -> int:
    journal = _open_journal(args)
    try:
        objects, last = journal.objects(), journal.last_pass()
        quarantined = [{"at": e.at, **e.detail} for e in journal.events(
            action=JournalAction.QUARANTINE, limit=20)]
    finally:
        journal.close()
    if args.output == "json":
        print(json.dumps({"lastPass": last, "objects": objects, "quarantined": quarantined},
                         indent=2))
        return EXIT_OK
    if last is not None:
        print(f"last pass  {_when(last['finished'])}  {last['result']}  {last['revision'] or ''}")
        print(f"           {last['message']}")
    waves = any(row["wave"] for row in objects)  # a column only where waves are declared
    print(f"{'TARGET':<12} {'KIND':<9} {'NAME':<22} {'STATUS':<12} {'APPLIED':<14} "
          + (f"{'WAVE':<18} " if waves else "") + "REASON")
    for row in objects:
        applied = (row["applied_digest"] or "")[:12]
        reason = row["reason"] or ""
        if row["message"] and row["status"] != "Ready":
            reason += f": {row['message']}"
        print(f"{row['target']:<12} {row['kind']:<9} {row['name']:<22} "
              f"{row['status'] or '-':<12} {applied or '-':<14} "
              + (f"{_wave_cell(row['wave']):<18} " if waves else "") + reason)
    for entry in quarantined:
        print(f"store: sha256:{entry.get('digest')} quarantined {_when(entry['at'])}: its bytes "
              f"did not match its digest ({entry.get('why')})")
    return EXIT_OK


def _wave_cell(wave: dict[str, Any] | None) -> str:
    """``1``, or ``2 (1/1 healthy)``: the wave and how many of the targets it waits for
    are healthy with the content, of how many it needs."""
    if not wave:
        return "-"
    if not wave["after"]:
        return str(wave["wave"])
    return f"{wave['wave']} ({wave['healthy']}/{wave['needed']} healthy)"


def cmd_history(args: argparse.Namespace) -> int:
    journal = _open_journal(args)
    try:
        events = journal.events(args.name, args.limit)
        known = sorted({row["name"] for row in journal.objects()}) \
            if args.name and not events else []
    finally:
        journal.close()
    if args.name and not events and args.name not in known:
        print(f"no object named {args.name!r} in the journal; known: "
              f"{', '.join(known) or 'none yet'}", file=sys.stderr)
        return EXIT_ERROR
    if args.output == "json":
        print(json.dumps([event.to_json() for event in events], indent=2))
        return EXIT_OK
    for event in events:
        subject = f"{event.target}/{event.kind}/{event.name}" if event.name else "-"
        detail = " ".join(f"{k}={v}" for k, v in event.detail.items() if v not in (None, ""))
        print(f"{_when(event.at)}  #{event.id:<5} {event.action:<9} {event.phase:<11} "
              f"{subject}  {detail}")
    return EXIT_OK


class _TerminalProgress:
    """``\r``-updated progress on a terminal, at most ten times a second."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._started = time.monotonic()
        self._shown = 0.0
        self.enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._shown < 0.1:
            return
        self._shown = now
        rate = done / max(now - self._started, 1e-6) / 2**20
        share = f" {100 * done / total:5.1f}%" if total else ""
        sys.stderr.write(f"\r{self._label}: {done / 2**20:,.0f} MiB{share} {rate:,.0f} MiB/s")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self._shown:
            sys.stderr.write("\n")


def cmd_gauntlet(args: argparse.Namespace) -> int:
    if args.daemon:
        return _gate_by_daemon(args)
    settings = _settings(args)
    fetching = _TerminalProgress(f"fetching {args.model}")
    journal = Journal(settings.journal_path)
    try:
        run = run_gate(settings, Wiring(settings).store, journal, args.model, rev=args.rev,
                       artifact=args.artifact, retry=args.retry, progress=_progress_line,
                       fetching=fetching)
    finally:
        fetching.finish()
        journal.close()
    return _report_gate(run)


def _gate_by_daemon(args: argparse.Namespace) -> int:
    """``gauntlet --daemon URL``: the running daemon runs the gate and records the verdict;
    the request is signed with the webhook secret (HMAC-SHA256, as GitHub signs webhooks)."""
    secret_file = args.secret_file or _settings(args).webhook_secret_file
    if secret_file is None:
        print("--daemon needs the webhook secret: --secret-file FILE", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    secret = Path(secret_file).read_bytes().strip()
    body = json.dumps({"model": args.model, "rev": args.rev or "",
                       "artifact": args.artifact or ""}).encode()
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    url = args.daemon.rstrip("/") + "/gate"
    if "://" not in url:
        url = "http://" + url
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature})
    try:
        with urllib.request.urlopen(request, timeout=_GATE_REQUEST_SECONDS) as response:
            answer = json.loads(response.read(1 << 20))
    except urllib.error.HTTPError as error:
        print(f"{url} answered {error.code}: {error.read(200).decode(errors='replace')}",
              file=sys.stderr)
        return EXIT_CANNOT_CHECK
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"cannot ask {url}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    outcome = answer.get("outcome")
    return _report_gate(GateRun(str(answer.get("model")), answer.get("revision"),
                                answer.get("sha256"),
                                outcome if outcome in GATE_EXITS else "error",
                                str(answer.get("reason")), str(answer.get("message")),
                                bool(answer.get("remembered"))))


def _report_gate(run: GateRun) -> int:
    label, code = GATE_EXITS[run.outcome]
    print(f"{label}  {run.model} sha256:{run.digest or '-'} "
          f"({run.reason}{', remembered' if run.remembered else ''})")
    for part in run.message.split("; "):
        print(f"  {part}")
    return code


def cmd_verify(args: argparse.Namespace) -> int:
    # ``sha256:<hex>`` is how this tool (and OCI, Docker) prints a digest: accept it back.
    digest = args.sha256.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        print(f"--sha256 {args.sha256!r}: a sha256 is 64 lowercase hex digits, optionally "
              "after 'sha256:'", file=sys.stderr)
        return EXIT_ERROR
    path = Path(args.artifact)
    progress = _TerminalProgress(f"hashing {path.name}")
    try:
        kind = verify_path(path, digest, progress=progress)
    except VerificationFailed as error:
        progress.finish()
        print(f"mismatch: {error}")
        return EXIT_ERROR
    except OSError as error:
        progress.finish()
        print(f"cannot read {path}: {error.strerror}", file=sys.stderr)
        return EXIT_ERROR
    progress.finish()
    print(f"ok: {path} ({kind}) sha256:{digest}")
    return EXIT_OK


def cmd_manifest(args: argparse.Namespace) -> int:
    folder = Path(args.directory)
    if not folder.is_dir():
        print(f"{folder}: not a directory", file=sys.stderr)
        return EXIT_ERROR
    print(write_manifest(folder))
    return EXIT_OK


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "apply": cmd_apply, "run": cmd_run,
            "status": cmd_status, "history": cmd_history, "gauntlet": cmd_gauntlet,
            "verify": cmd_verify,
            "manifest": cmd_manifest}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InvalidInput as error:
        return _report_invalid(error, sys.stdout if args.command == "validate" else sys.stderr)
    except SandboxUnavailable as error:
        # Not a verdict on the input: the check could not run here (exit 3 where the
        # contract has one: validate and gauntlet).
        print(f"reconciler {args.command}: {error.reason}: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK if args.command in ("validate", "gauntlet") else EXIT_ERROR
    except ReconcilerError as error:
        print(f"reconciler {args.command}: {error.reason}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``history | head``): stop quietly, as a shell tool does;
        # stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
