"""The ``reconciler`` command line. Exit codes are part of the contract (DESIGN.md §2)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import os
import pwd
import re
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from reconciler import __version__, completion, helptext
from reconciler.app import (
    Connections,
    Wiring,
    configure_sandbox,
    confine_state_dir,
    git_source,
)
from reconciler.costs import plan_spend
from reconciler.daemon import control
from reconciler.daemon.control import runtime_socket
from reconciler.daemon.daemon import Daemon
from reconciler.daemon.leadership import leadership
from reconciler.daemon.lock import FleetLock
from reconciler.desired import schema_files
from reconciler.desired.cache import DesiredCache
from reconciler.desired.loader import cache_salt, load_desired, located_warnings
from reconciler.diagnostics import Diagnostic, InvalidInput
from reconciler.digests import VerificationFailed, verify_path, write_manifest
from reconciler.durations import parse_duration
from reconciler.errors import ReconcilerError, StalledError, classify
from reconciler.execute.executor import Hooks
from reconciler.gauntlet.budgets import budget_warnings
from reconciler.journal import Journal
from reconciler.local.roots import check_roots
from reconciler.logs import FORMATS, LEVELS, LogSettingError, configure, fields
from reconciler.output import (
    add_output_flags,
    color_lines,
    emit,
    printable,
    use_color,
    wants_data,
)
from reconciler.passes import load, plan_pass, render_planned, run_pass
from reconciler.plan.planner import ALL_TARGETS, History
from reconciler.prcheck import GateRun, run_gate
from reconciler.progress import ByteProgress, GameProgress, StatusLine
from reconciler.promote import Promotion, promote
from reconciler.redaction import redact
from reconciler.sandbox.runner import SandboxUnavailable
from reconciler.settings import Settings, find_config_file, load_settings
from reconciler.source.directory import DirectorySnapshot
from reconciler.source.snapshot import Snapshot
from reconciler.vocabulary import JournalAction, PassResult, Phase

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
_GATE_REQUEST_SECONDS = 3 * 3600  # a daemon-run gate may play for a long time
EXIT_CANNOT_CHECK = 3  # validate: no sandbox; gauntlet: the tool failed, not the model
# reconciler gauntlet: a CI can tell a model that missed its bar from a broken tool.
GATE_EXITS = {"passed": ("PASS", EXIT_OK), "rejected": ("FAIL", EXIT_ERROR),
              "inconclusive": ("INCONCLUSIVE", 2), "error": ("ERROR", EXIT_CANNOT_CHECK),
              "stopped": ("STOPPED", EXIT_CANNOT_CHECK), "blocked": ("BLOCKED", EXIT_CANNOT_CHECK)}
MAX_REASON_CHARS = 500  # suspend --reason: shown on every status line of the target
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for a tool whose reader left

log = logging.getLogger(__name__)


def _print(*values: object, file: TextIO | None = None, flush: bool = False) -> None:
    """``print`` for everything this command line says: journal rows, health check output,
    gate messages, a remote's error body and suspension reasons come from repositories,
    servers or other people, and a terminal obeys the escape sequences it is sent, so
    control characters are shown as ``\\xNN`` (docs/output.md)."""
    print(printable(" ".join(str(value) for value in values)),
          file=sys.stdout if file is None else file, flush=flush)


def _logging_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """Before or after the command's name: ``reconciler --log-level debug run`` and
    ``reconciler run --log-level debug`` (a subcommand must not reset what the main
    parser read, hence SUPPRESS there)."""
    parser.add_argument("--log-format", choices=FORMATS, default=default,
                        help="log lines as text or JSON, on stderr (default: "
                        "$RECONCILER_LOG_FORMAT, else text)")
    parser.add_argument("--log-level", choices=tuple(LEVELS), default=default,
                        help="the least severe lines shown (default: $RECONCILER_LOG_LEVEL, "
                        "else info)")


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
                                     "reconciler for ML fleets.", epilog=helptext.TOP_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check desired state: schemas, "
                                   "references, strategies (exit 0 valid, 1 invalid)")
    validate.add_argument("paths", nargs="*", metavar="PATH",
                          help="desired-state folders, or files in them (as pre-commit "
                          "passes them: each file's folder is checked whole); default: the "
                          "repository's branch")
    validate.add_argument("--rev", help="a revision of --repo to check (branch, tag, sha)")
    add_output_flags(validate)
    _common(validate)

    plan = commands.add_parser("plan", help="what a pass would do (exit 0 in sync, "
                               "2 changes, 1 error)")
    add_output_flags(plan, color=True)
    _common(plan)

    apply = commands.add_parser("apply", help="one reconcile pass (exit 0 converged or "
                                "waiting on a soak or window, 1 error or blocked)")
    add_output_flags(apply)
    _common(apply)
    run = commands.add_parser("run", help="the daemon: reconcile until SIGTERM")
    _common(run)

    status = commands.add_parser("status", help="per-object state, last pass, blocked reasons")
    add_output_flags(status)
    _common(status)
    history = commands.add_parser("history", help="the journal, optionally of one object")
    history.add_argument("name", nargs="?", help="an object's name")
    history.add_argument("--limit", type=int, default=50,
                         help="show at most this many events, the newest (default 50)")
    add_output_flags(history)
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
    add_output_flags(gauntlet)
    _common(gauntlet)

    promote = commands.add_parser("promote", help="verify and gate an artifact, then propose "
                                  "it: a commit of the new digest on a new branch and a pull "
                                  "request (exit 0 proposed, 1 rejected, 2 inconclusive, "
                                  "3 error)")
    promote.add_argument("model", metavar="MODEL")
    promote.add_argument("--artifact", required=True, metavar="URI",
                         help="the new artifact (file:// beneath artifacts.fileRoots, "
                         "http(s)://, or a path in the desired-state folder)")
    promote.add_argument("--sha256", metavar="HEX", help="its digest (default: computed as "
                         "it is fetched)")
    promote.add_argument("--dry-run", action="store_true", help="print the change to the "
                         "Model document; commit and push nothing")
    promote.add_argument("--head", metavar="BRANCH", help="the new branch (default "
                         "<branchPrefix>promote/<model>-<digest>)")
    promote.add_argument("--retry", action="store_true", help="forget a remembered verdict "
                         "and run the gate again")
    add_output_flags(promote)
    _common(promote)

    verify = commands.add_parser("verify", help="verify a file or bundle against a sha256 "
                                 "(exit 0 ok, 1 mismatch)")
    verify.add_argument("artifact", metavar="PATH", help="a file, or a bundle directory")
    verify.add_argument("--sha256", required=True, metavar="HEX",
                        help="the digest, HEX or sha256:HEX (of manifest.json, for a bundle)")
    add_output_flags(verify)
    suspend = commands.add_parser(
        "suspend", help="stop the line: nothing is changed on the targets (drift is still "
        "observed and reported) until resume (exit 0; 1 unknown target)")
    suspend.add_argument("targets", nargs="*", metavar="TARGET")
    suspend.add_argument("--all", action="store_true", help="every target, declared later too")
    suspend.add_argument("--reason", required=True, metavar="TEXT",
                         help="why, for the journal, status and whoever resumes")
    add_output_flags(suspend)
    _common(suspend)
    resume = commands.add_parser("resume", help="lift a suspension (exit 0; 1 unknown "
                                 "target)")
    resume.add_argument("targets", nargs="*", metavar="TARGET")
    resume.add_argument("--all", action="store_true", help="lift every suspension")
    add_output_flags(resume)
    _common(resume)
    reconcile = commands.add_parser(
        "reconcile", help="ask the running daemon for a pass now (exit 0; with --wait, the "
        "pass's result: 0 converged, changed or waiting, 1 otherwise)")
    reconcile.add_argument("--wait", action="store_true", help="wait for that pass to end")
    reconcile.add_argument("--timeout", default="30m", metavar="DURATION",
                           help="how long --wait waits (default 30m)")
    add_output_flags(reconcile)
    _common(reconcile)
    manifest = commands.add_parser("manifest", help="write manifest.json for a bundle "
                                   "directory and print the digest to pin")
    manifest.add_argument("directory", metavar="DIR")
    add_output_flags(manifest)

    complete = commands.add_parser("completion", help="print a shell completion script")
    complete.add_argument("shell", choices=completion.SHELLS)
    schema = commands.add_parser("schema", help="write the document schemas for editors "
                                 "and CI")
    schema.add_argument("kind", nargs="?", metavar="KIND",
                        help="print this one schema (a kind, 'document' or 'settings')")
    schema.add_argument("--output-dir", metavar="DIR", help="write every schema here")
    add_output_flags(schema)
    helptext.describe(commands)
    _logging_flags(parser, None)
    for command in commands.choices.values():
        _logging_flags(command, argparse.SUPPRESS)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, str | None]:
    return {"repo": args.repo, "branch": args.branch, "path": args.path,
            "stateDir": args.state_dir}


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with the sandbox they name configured for whatever runs next."""
    settings = load_settings(find_config_file(args.config), _overrides(args))
    configure_sandbox(settings)
    return settings


def _report_invalid(error: InvalidInput, stream: TextIO, args: argparse.Namespace) -> int:
    if wants_data(args) and args.command == "validate":
        emit(args, {"valid": False, "checked": [],
                    "errors": [d.error_json() for d in error.diagnostics], "warnings": []}, "")
        return EXIT_ERROR
    for diagnostic in error.diagnostics:
        _print(diagnostic.format(), file=stream)
    count = len(error.diagnostics)
    _print(f"{count} error{'s' if count != 1 else ''}", file=stream)
    return EXIT_ERROR


def _folders(paths: list[str], folder: str) -> tuple[list[Path], list[str]]:
    """The desired-state folders that ``paths`` name: a folder as it is; a file, the
    nearest folder above it whose path ends in ``folder`` (the settings' ``path``). Files
    in no such folder (a README, the settings) are nothing to validate. Also: the paths
    that do not exist."""
    found: list[Path] = []
    missing: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            candidate: Path | None = path
        elif not path.exists():
            missing.append(given)
            continue
        else:
            candidate = next((parent for parent in path.absolute().parents
                              if parent.as_posix().endswith("/" + folder)), None)
            if candidate is not None and candidate.is_relative_to(Path.cwd()):
                candidate = candidate.relative_to(Path.cwd())  # errors read as given
        if candidate is not None and candidate.resolve() not in {f.resolve() for f in found}:
            found.append(candidate)
    return found, missing


def cmd_validate(args: argparse.Namespace) -> int:
    if args.output != "json":
        return _validate(args)
    # CI parses stdout: whatever stops the check is an error in the same document.
    try:
        return _validate(args)
    except InvalidInput as error:  # the settings
        errors, code = [d.error_json() for d in error.diagnostics], EXIT_ERROR
    except ReconcilerError as error:  # the repository, or no sandbox: not about a file
        errors = [{"file": None, "line": None, "column": None, "rule": error.reason,
                   "message": str(error)}]
        code = EXIT_CANNOT_CHECK if isinstance(error, SandboxUnavailable) else EXIT_ERROR
    json.dump({"valid": False, "checked": [], "errors": errors, "warnings": []}, sys.stdout,
              indent=2)
    print()
    return code


def _validate(args: argparse.Namespace) -> int:
    # With settings (a repository, or a folder with --config) the roots are checked too.
    settings = _settings(args) if not args.paths or args.config else None
    snapshots: list[Snapshot] = []
    errors: list[Diagnostic] = []
    if args.paths:
        folders, missing = _folders(args.paths, (args.path or "desired-state").strip("/"))
        errors += [Diagnostic(given, 1, 1, "no such file or directory", "path-missing")
                   for given in missing]
        for folder in folders:
            shown = str(folder).rstrip("/") + "/"
            snapshots.append(DirectorySnapshot(folder.resolve(), shown))
    else:
        assert settings is not None
        snapshots.append(git_source(settings).snapshot_at(args.rev or settings.branch))
    warnings: list[Diagnostic] = []
    checked: list[dict[str, object]] = []
    for snapshot in snapshots:
        try:
            desired = load_desired(snapshot, DesiredCache(cache_salt()))
            problems = check_roots(desired, settings, snapshot.display_prefix) \
                if settings else []
            if problems:
                raise InvalidInput(problems)
        except InvalidInput as error:
            errors += error.diagnostics
            continue
        warnings += located_warnings(snapshot, budget_warnings(desired.gauntlets.values()))
        counts = {"targets": len(desired.targets), "strategies": len(desired.strategies),
                  "configs": len(desired.configs), "models": len(desired.models),
                  "gauntlets": len(desired.gauntlets), "budgets": len(desired.budgets)}
        checked.append({"folder": snapshot.display_prefix or "./",
                        "revision": snapshot.revision, "counts": counts})
    if wants_data(args):
        emit(args, {"valid": not errors, "checked": checked,
                    "errors": [d.error_json() for d in sorted(set(errors))],
                    "warnings": [d.error_json() for d in warnings]}, "")
        return EXIT_ERROR if errors else EXIT_OK
    if errors:
        return _report_invalid(InvalidInput(errors), sys.stdout, args)
    for warning in warnings:
        _print(warning.format())
    if not checked:
        _print("nothing to validate: no file is in a desired-state folder")
    for done in checked:
        numbers = done["counts"]
        assert isinstance(numbers, dict)
        listed = ", ".join(f"{n} {kind}" for kind, n in numbers.items() if n)
        _print(f"{done['folder']}: valid at {done['revision']} ({listed})")
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
    if wants_data(args):
        emit(args, json.loads(render_planned(planned, "json", spent=spent)), "")
    else:
        # Repository content is shown, never obeyed: control characters become visible.
        text = printable(render_planned(planned, "text", spent=spent))
        sys.stdout.write(color_lines(text) if use_color(args.color, sys.stdout) else text)
    if planned.plan.errors:
        return EXIT_ERROR
    return EXIT_OK if planned.plan.in_sync else EXIT_CHANGES


class _Downloads:
    """``apply``'s artifact downloads on a terminal: bytes, rate and ETA, one line per
    model (as ``verify`` and ``gauntlet`` show theirs)."""

    def __init__(self) -> None:
        self._model: str | None = None
        self._line: ByteProgress | None = None

    def __call__(self, model: str, done: int, total: int, steps: StatusLine) -> None:
        if model != self._model or self._line is None:
            self.finish()
            steps.finish()  # the step that started the fetch keeps its own line
            self._model, self._line = model, ByteProgress(f"fetching {model}",
                                                        from_first_call=True)
        self._line(done, total)

    def finish(self) -> None:
        if self._line is not None:
            self._line.finish()
        self._model, self._line = None, None


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
            _print(f"{held.describe()}; waiting for it to expire", file=sys.stderr, flush=True)
        if not held.leading and not held.wait_leading():
            done.set()
            lock.release()
            _print(f"{held.describe()}; another daemon acts on this fleet", file=sys.stderr)
            return EXIT_ERROR
    journal = Journal(settings.journal_path)
    status_line = StatusLine()
    downloads = _Downloads()

    def step(text: str) -> None:
        downloads.finish()  # a download's last line stays on screen above the next step
        status_line(printable(text))  # an action's text may quote the repository

    try:
        confine_state_dir(settings)
        wiring = Wiring(settings, connections=connections)
        wiring.store.sweep()  # first: leftovers of a full disk must not block the journal
        journal.recover()
        outcome = run_pass(wiring, journal, stop, hooks=Hooks(
            progress=step, fetching=lambda model, done, total: downloads(
                model, done, total, status_line)))
    finally:
        downloads.finish()
        status_line.finish()
        journal.close()
        done.set()
        if held is not None:
            held.stop()
        lock.release()
    results = outcome.report.results if outcome.report is not None else ()
    lines = [f"{r.result:>11}  {r.action.target}  {r.action.kind}/{r.action.name}: {r.message}"
             for r in results if r.result != "in-sync"]
    emit(args, {"result": str(outcome.result), "revision": outcome.revision,
                "message": outcome.message,
                "actions": [{"target": r.action.target, "kind": r.action.kind,
                             "name": r.action.name, "result": r.result, "message": r.message}
                            for r in results]},
         "".join(f"{line}\n" for line in [*lines, outcome.status_line()]))
    return EXIT_OK if outcome.result in (PassResult.CONVERGED, PassResult.CHANGED,
                                         PassResult.WAITING) else EXIT_ERROR


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon: what stops it (invalid settings, a busy port, a lost fleet lock) goes to
    the log as an error (journald priority 3 under systemd), not to a bare stderr line."""
    try:
        return Daemon(find_config_file(args.config), _overrides(args)).run()
    except InvalidInput as error:
        for diagnostic in error.diagnostics:
            log.error(f"reconciler run: {diagnostic.format()}")
    except ReconcilerError as error:
        log.error(f"reconciler run: {error.reason}: {error}", extra=fields(reason=error.reason))
    return EXIT_ERROR


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
        suspended = sorted(journal.suspensions().values(), key=lambda held: held.target)
        analyses = journal.analyses()
        quarantined = [{"at": e.at, **e.detail} for e in journal.events(
            action=JournalAction.QUARANTINE, limit=20)]
    finally:
        journal.close()
    if wants_data(args):
        for row in objects:
            row["analysis"] = analyses.get((row["target"], row["kind"], row["name"]))
        emit(args, {"lastPass": last, "objects": objects, "quarantined": quarantined,
                    "suspended": [{"target": held.target, "who": held.who, "at": held.at,
                                   "reason": held.reason} for held in suspended]}, "")
        return EXIT_OK
    for held in suspended:
        _print(f"SUSPENDED  {held.describe()}")
    if last is not None:
        _print(f"last pass  {_when(last['finished'])}  {last['result']}  {last['revision'] or ''}")
        _print(f"           {last['message']}")
    waves = any(row["wave"] for row in objects)  # a column only where waves are declared
    _print(f"{'TARGET':<12} {'KIND':<9} {'NAME':<22} {'STATUS':<12} {'APPLIED':<14} "
           + (f"{'WAVE':<18} " if waves else "") + "REASON")
    for row in objects:
        applied = (row["applied_digest"] or "")[:12]
        reason = row["reason"] or ""
        if row["message"] and row["status"] != "Ready":
            reason += f": {row['message']}"
        _print(f"{row['target']:<12} {row['kind']:<9} {row['name']:<22} "
               f"{row['status'] or '-':<12} {applied or '-':<14} "
               + (f"{_wave_cell(row['wave']):<18} " if waves else "") + reason)
    for entry in quarantined:
        _print(f"store: sha256:{entry.get('digest')} quarantined {_when(entry['at'])}: its bytes "
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
        _print(f"no object named {args.name!r} in the journal; known: "
              f"{', '.join(known) or 'none yet'}", file=sys.stderr)
        return EXIT_ERROR
    if wants_data(args):
        emit(args, [event.to_json() for event in events], "")
        return EXIT_OK
    for event in events:
        subject = f"{event.target}/{event.kind}/{event.name}" if event.name else "-"
        detail = _shown_detail(event.action, event.detail)
        _print(f"{_when(event.at)}  #{event.id:<5} {event.action:<9} {event.phase:<11} "
              f"{subject}  {detail}")
    return EXIT_OK


def _shown_detail(action: str, detail: dict[str, Any]) -> str:
    """``key=value`` pairs; an analysis outcome's checks as their measured values."""
    shown = dict(detail)
    checks = shown.pop("checks", None) if action == JournalAction.ANALYSIS else None
    text = " ".join(f"{k}={v}" for k, v in shown.items() if v not in (None, ""))
    if isinstance(checks, dict):
        text += " values: " + "; ".join(
            f"{name}=" + ",".join(str(m.get("value", "no data"))
                                  for m in check.get("measurements", ()))
            for name, check in checks.items())
    elif checks is not None:
        text += f" checks={checks}"
    return text


def cmd_gauntlet(args: argparse.Namespace) -> int:
    if args.daemon:
        return _gate_by_daemon(args)
    settings = _settings(args)
    fetching = ByteProgress(f"fetching {args.model}")
    playing = GameProgress(f"gauntlet for {args.model}")

    def games(done: int, total: int) -> None:
        fetching.finish()  # the download is over when the games start: keep its last line
        playing(done, total)

    journal = Journal(settings.journal_path)
    try:
        gate = run_gate(settings, Wiring(settings).store, journal, args.model,
                        rev=args.rev, artifact=args.artifact, retry=args.retry,
                        fetching=fetching, playing=games)
    finally:
        fetching.finish()
        playing.finish()
        journal.close()
    return _report_gate(args, gate)


def _gate_by_daemon(args: argparse.Namespace) -> int:
    """``gauntlet --daemon URL``: the running daemon runs the gate and records the verdict;
    the request is signed with the webhook secret (HMAC-SHA256, as GitHub signs webhooks)."""
    secret_file = args.secret_file or _settings(args).webhook_secret_file
    if secret_file is None:
        _print("--daemon needs the webhook secret: --secret-file FILE", file=sys.stderr)
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
        _print(f"{url} answered {error.code}: {error.read(200).decode(errors='replace')}",
              file=sys.stderr)
        return EXIT_CANNOT_CHECK
    except (urllib.error.URLError, OSError, ValueError) as error:
        _print(f"cannot ask {url}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    outcome = answer.get("outcome")
    return _report_gate(args, GateRun(str(answer.get("model")), answer.get("revision"),
                                answer.get("sha256"),
                                outcome if outcome in GATE_EXITS else "error",
                                str(answer.get("reason")), str(answer.get("message")),
                                bool(answer.get("remembered")), answer.get("evidence")))


def _report_gate(args: argparse.Namespace, run: GateRun) -> int:
    label, code = GATE_EXITS[run.outcome]
    emit(args, run.to_json(),
         f"{label}  {run.model} sha256:{run.digest or '-'} "
         f"({run.reason}{', remembered' if run.remembered else ''})\n"
         + "".join(f"  {part}\n" for part in run.message.split("; ")))
    return code


def cmd_promote(args: argparse.Namespace) -> int:
    settings = _settings(args)
    fetching = ByteProgress(f"fetching {args.model}")
    playing = StatusLine()

    def progress(text: str) -> None:
        fetching.finish()  # the download is over when the games start: keep its last line
        playing(printable(text))

    def say(text: str) -> None:
        fetching.finish()
        playing.finish()
        # Gate, diff and push lines are repository and remote content: shown, not obeyed.
        # With -o json|yaml they go to stderr: stdout holds the one document.
        _print(text, flush=True, file=sys.stderr if wants_data(args) else sys.stdout)

    journal = Journal(settings.journal_path)
    try:
        done = promote(settings, Wiring(settings).store, journal, args.model, args.artifact,
                       sha256=args.sha256, dry_run=args.dry_run, branch=args.head,
                       retry=args.retry, say=say, progress=progress, fetching=fetching)
    except ReconcilerError as error:
        say(f"ERROR  {error.reason}: {error}")
        done = Promotion(args.model, redact(args.artifact), error=f"{error.reason}: {error}")
    finally:
        fetching.finish()
        playing.finish()
        journal.close()
    emit(args, done.to_json(), "")  # the text was said as it happened
    return done.exit_code


def cmd_verify(args: argparse.Namespace) -> int:
    # ``sha256:<hex>`` is how this tool (and OCI, Docker) prints a digest: accept it back.
    digest = args.sha256.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        _print(f"--sha256 {args.sha256!r}: a sha256 is 64 lowercase hex digits, optionally "
              "after 'sha256:'", file=sys.stderr)
        return EXIT_ERROR
    path = Path(args.artifact)
    progress = ByteProgress(f"hashing {path.name}")
    result = {"ok": False, "path": str(path), "sha256": digest, "kind": None, "error": None}
    try:
        result["kind"] = verify_path(path, digest, progress=progress)
    except VerificationFailed as error:
        progress.finish()
        emit(args, {**result, "error": str(error)}, f"mismatch: {error}\n")
        return EXIT_ERROR
    except OSError as error:
        progress.finish()
        _print(f"cannot read {path}: {error.strerror}", file=sys.stderr)
        return EXIT_ERROR
    progress.finish()
    emit(args, {**result, "ok": True}, f"ok: {path} ({result['kind']}) sha256:{digest}\n")
    return EXIT_OK


def cmd_manifest(args: argparse.Namespace) -> int:
    folder = Path(args.directory)
    if not folder.is_dir():
        _print(f"{folder}: not a directory", file=sys.stderr)
        return EXIT_ERROR
    digest = write_manifest(folder)
    emit(args, {"directory": str(folder), "manifest": str(folder / "manifest.json"),
                "sha256": digest}, f"{digest}\n")
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion.script(build_parser(), args.shell))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    if args.kind is not None:
        try:
            sys.stdout.write(schema_files.text_of(args.kind))
        except KeyError:
            _print(f"no schema named {args.kind!r}; known: {', '.join(schema_files.names())}",
                  file=sys.stderr)
            return EXIT_ERROR
        return EXIT_OK
    try:
        written = schema_files.write_all(Path(args.output_dir)) if args.output_dir else []
    except OSError as error:
        _print(f"reconciler schema: cannot write {args.output_dir}: "
               f"{error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR
    listing = [{"name": name, "id": schema_id, **({"file": str(path)} if path else {})}
               for name, schema_id, path in schema_files.listing(written)]
    emit(args, listing, "".join(f"{row.get('file', row['name'])}  {row['id']}\n"
                                for row in listing))
    return EXIT_OK


def _caller() -> str:
    """Who asks, from the OS: the user of this process (and who ran sudo, if it was)."""
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo by {sudo})" if sudo and os.getuid() == 0 and sudo != name else name


def _journal_to_write(settings: Settings) -> Journal:
    try:
        return Journal(settings.journal_path)
    except (sqlite3.Error, OSError) as error:
        raise StalledError(f"cannot write the journal {settings.journal_path}: {error}; run "
                           "this as root or as the daemon's user", reason="NoJournal") from None


def _hand_back(settings: Settings) -> None:
    """Root writing a journal the daemon's user owns: files SQLite created on the way
    (the journal itself, its -wal and -shm) go to the state dir's owner."""
    if os.geteuid() != 0 or not settings.state_dir.is_dir():
        return
    owner = settings.state_dir.stat()
    for path in settings.state_dir.glob(f"{settings.journal_path.name}*"):
        with contextlib.suppress(OSError):
            if path.stat().st_uid != owner.st_uid:
                os.chown(path, owner.st_uid, owner.st_gid)


def _control_path(settings: Settings) -> Path:
    """The running daemon's control socket, as its daemon.json says (under systemd it is in
    the daemon's runtime directory), else where a daemon with these settings would put it."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        said = json.loads((settings.state_dir / "daemon.json").read_text()).get("control")
        if said:
            return Path(said)
    return runtime_socket(settings.state_dir)


def _wake_daemon(settings: Settings, request: dict[str, object],
                 timeout: float = 10.0) -> dict[str, object] | None:
    """The daemon's answer; None when no daemon runs (said on stderr)."""
    path = _control_path(settings)
    try:
        return control.ask(path, request, timeout)
    except control.NoDaemon:
        return None
    except OSError as error:
        return {"ok": False, "error": f"cannot reach the daemon at {path}: {error}"}


def _known_targets(settings: Settings, journal: Journal, names: list[str]) -> set[str]:
    """Targets a name may refer to: those the journal knows (and suspensions it holds),
    and, when a name is new to it, those the branch's desired state declares."""
    known = {row["target"] for row in journal.objects()} | set(journal.suspensions())
    if all(name in known for name in names):
        return known
    try:
        known |= set(load(Wiring(settings)).targets)
        return known
    except InvalidInput as error:
        why = str(error)
    except Exception as error:  # root and the daemon's mirror (git refuses to open it), ...
        outcome = classify(error)
        why = f"{outcome.reason}: {outcome.message}"
    _print(f"note: the desired state could not be read to find newly declared targets ({why})",
           file=sys.stderr)
    return known


def _unknown(names: list[str], known: set[str]) -> int | None:
    missing = [name for name in names if name not in known]
    if not missing:
        return None
    shown = ", ".join(sorted(known - {ALL_TARGETS})) or "none"
    _print(f"unknown target{'s' if len(missing) > 1 else ''}: {', '.join(missing)} (known: "
          f"{shown}); nothing was recorded", file=sys.stderr)
    return EXIT_ERROR


def _daemon_json(reply: dict[str, object] | None) -> dict[str, object]:
    """What the running daemon made of a request, for -o json|yaml (docs/output.md)."""
    return {"running": reply is not None, "tookUp": bool(reply and reply.get("ok")),
            "pid": reply.get("pid") if reply else None,
            "error": None if reply is None or reply.get("ok") else str(reply.get("error"))}


def _took_up(args: argparse.Namespace, reply: dict[str, object] | None, what: str) -> None:
    said = sys.stderr if wants_data(args) else sys.stdout
    if reply is None:
        _print(f"no daemon is running: {what} is recorded in the journal and applies when "
              "the daemon starts (and to `reconciler apply`)", file=said)
    elif not reply.get("ok"):
        _print(f"the daemon did not take it up ({reply.get('error')}): {what} is recorded in "
               "the journal and applies at the daemon's next pass", file=sys.stderr)
    else:
        _print(f"the running daemon (pid {reply.get('pid')}) took it up", file=said)


def cmd_suspend(args: argparse.Namespace) -> int:
    if bool(args.all) == bool(args.targets):
        _print("name the targets to suspend, or --all (not both)", file=sys.stderr)
        return EXIT_ERROR
    if not args.reason.strip() or len(args.reason) > MAX_REASON_CHARS:
        _print(f"--reason must say why, in at most {MAX_REASON_CHARS} characters (it is what "
              "status shows and whoever resumes reads)", file=sys.stderr)
        return EXIT_ERROR
    if not args.reason.isprintable():
        # Shown to others by status, the log and notifications: a newline would forge a
        # line there, an escape sequence would rewrite their terminal.
        print("--reason must be one line of text, without control characters (newlines, "
              "tabs, escape sequences, direction overrides); nothing was recorded",
              file=sys.stderr)
        return EXIT_ERROR
    settings = _settings(args)
    journal = _journal_to_write(settings)
    try:
        if not args.all and (code := _unknown(args.targets, _known_targets(
                settings, journal, args.targets))) is not None:
            return code
        names = [ALL_TARGETS] if args.all else list(dict.fromkeys(args.targets))
        who = _caller()
        journal.suspend(names, who, args.reason.strip())
        held = journal.suspensions()  # as recorded: the reason redacted, the time stored
    finally:
        journal.close()
        _hand_back(settings)
    reason, at = held[names[0]].reason, held[names[0]].at
    shown = "every target (declared later too)" if args.all else ", ".join(names)
    said = sys.stderr if wants_data(args) else sys.stdout
    _print(f"suspended {shown} by {who}: {reason}", file=said)
    reply = _wake_daemon(settings, {"op": "wake"})
    _took_up(args, reply, "the suspension")
    emit(args, {"suspended": names, "all": bool(args.all), "who": who, "at": at,
                "reason": reason, "daemon": _daemon_json(reply)}, "")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    if bool(args.all) == bool(args.targets):
        _print("name the targets to resume, or --all (not both)", file=sys.stderr)
        return EXIT_ERROR
    settings = _settings(args)
    journal = _journal_to_write(settings)
    try:
        held = journal.suspensions()
        if not args.all:
            if (code := _unknown(args.targets, _known_targets(settings, journal,
                                                              args.targets))) is not None:
                return code
            if ALL_TARGETS in held:
                _print(f"{held[ALL_TARGETS].describe()}; a single target is not resumed out of "
                      "it: `reconciler resume --all` lifts it (then suspend the targets that "
                      "must stay stopped); nothing was recorded", file=sys.stderr)
                return EXIT_ERROR
        names = [ALL_TARGETS] if args.all else list(dict.fromkeys(args.targets))
        who, at = _caller(), time.time()
        lifted = journal.resume(names, who)
    finally:
        journal.close()
        _hand_back(settings)
    said = sys.stderr if wants_data(args) else sys.stdout
    record: dict[str, object] = {"resumed": sorted(lifted), "all": bool(args.all),
                                 "who": who, "at": at, "daemon": _daemon_json(None)}
    if not lifted:
        _print("nothing to resume: " + ("no target is suspended" if args.all
                                       else f"{', '.join(names)} not suspended"), file=said)
        emit(args, record, "")
        return EXIT_OK
    _print("resumed " + ", ".join("the whole fleet (--all)" if name == ALL_TARGETS else name
                                 for name in sorted(lifted)), file=said)
    reply = _wake_daemon(settings, {"op": "wake"})
    _took_up(args, reply, "the resume")
    emit(args, {**record, "daemon": _daemon_json(reply)}, "")
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as error:
        _print(f"--timeout {args.timeout!r}: {error}", file=sys.stderr)
        return EXIT_ERROR
    settings = _settings(args)
    journal = _journal_to_write(settings)
    try:
        journal.record(JournalAction.RECONCILE, Phase.INFO,
                       detail={"who": _caller(), "wait": bool(args.wait)})
    finally:
        journal.close()
        _hand_back(settings)
    reply = _wake_daemon(settings, {"op": "reconcile", "wait": bool(args.wait),
                                    "timeout": timeout}, timeout + 10 if args.wait else 10.0)
    record: dict[str, object] = {"wait": bool(args.wait), "daemon": _daemon_json(reply),
                                 "pass": None}
    said = sys.stderr if wants_data(args) else sys.stdout
    if reply is None:
        _print("no daemon is running: the request is recorded in the journal; a daemon runs "
              "a pass as soon as it starts (`reconciler apply` runs one here and now)",
              file=said)
        emit(args, record, "")
        return EXIT_ERROR if args.wait else EXIT_OK
    if not reply.get("ok"):
        _print(f"reconcile: {reply.get('error')}", file=sys.stderr)
        emit(args, record, "")
        return EXIT_ERROR
    if not args.wait:
        _print(f"the running daemon (pid {reply.get('pid')}) starts a pass now", file=said)
        emit(args, record, "")
        return EXIT_OK
    result, message = reply.get("result"), reply.get("message")
    _print(str(message or result), file=said)
    emit(args, {**record, "pass": {"result": result, "message": message}}, "")
    return EXIT_OK if result in (PassResult.CONVERGED, PassResult.CHANGED,
                                 PassResult.WAITING) else EXIT_ERROR


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "apply": cmd_apply, "run": cmd_run,
            "status": cmd_status, "history": cmd_history, "gauntlet": cmd_gauntlet,
            "promote": cmd_promote, "verify": cmd_verify, "suspend": cmd_suspend,
            "resume": cmd_resume, "reconcile": cmd_reconcile,
            "manifest": cmd_manifest, "completion": cmd_completion, "schema": cmd_schema}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # promote's 1 says "the gate rejected the model": its own errors are 3 (DESIGN.md §2).
    error_exit = EXIT_CANNOT_CHECK if args.command == "promote" else EXIT_ERROR
    try:
        configure(args.log_format, args.log_level)
    except LogSettingError as error:
        _print(f"reconciler: {error}", file=sys.stderr)
        return error_exit
    try:
        return COMMANDS[args.command](args)
    except InvalidInput as error:
        code = _report_invalid(error, sys.stdout if args.command == "validate" else sys.stderr,
                               args)
        return error_exit if code == EXIT_ERROR else code
    except SandboxUnavailable as error:
        # Not a verdict on the input: the check could not run here (exit 3 where the
        # contract has one: validate and gauntlet).
        _print(f"reconciler {args.command}: {error.reason}: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK if args.command in ("validate", "gauntlet", "promote") \
            else EXIT_ERROR
    except ReconcilerError as error:
        _print(f"reconciler {args.command}: {error.reason}: {error}", file=sys.stderr)
        return error_exit
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``history | head``): stop quietly, as a shell tool does;
        # stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:
        if args.command != "promote":
            raise
        # Python's own exit for a crash is 1, which promote's contract gives to a rejected
        # model: a fault of the machine (a journal that cannot open, a full disk) is 3.
        outcome = classify(error)
        _print(f"reconciler promote: {outcome.reason}: {outcome.message}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
