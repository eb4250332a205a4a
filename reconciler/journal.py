"""The journal: every action's intent before it runs and its outcome after (SQLite, WAL).

It is also the daemon's memory of each object: what was applied, what was attempted, what
has been healthy since when, what failed and must not be retried, and which model digests
were canonical before. ``synchronous=FULL``: a committed entry survives ``kill -9`` and a
power cut. Intents left open by a crash are closed as ``interrupted`` on the next open.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import StalledError, is_sqlite_corruption
from reconciler.plan.planner import ALL_TARGETS, DAY, HOUR, History, ObjectKey, Suspension
from reconciler.redaction import redact_text
from reconciler.vocabulary import Condition, JournalAction, Phase, Reason

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    pass INTEGER,
    revision TEXT,
    target TEXT, kind TEXT, name TEXT,
    action TEXT NOT NULL,
    phase TEXT NOT NULL,
    intent INTEGER,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_by_name ON events (name, id);
CREATE INDEX IF NOT EXISTS events_by_action ON events (action, phase, at);
CREATE TABLE IF NOT EXISTS objects (
    target TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    applied_digest TEXT, applied_revision TEXT, applied_at REAL,
    attempted_digest TEXT, attempted_revision TEXT, attempted_at REAL,
    healthy_digest TEXT, healthy_since REAL,
    failed_digest TEXT, failed_revision TEXT, failed_reason TEXT, failed_at REAL,
    owed_digest TEXT,
    wave TEXT,
    status TEXT, reason TEXT, message TEXT, updated_at REAL,
    PRIMARY KEY (target, kind, name)
);
CREATE TABLE IF NOT EXISTS canonical (
    model TEXT NOT NULL, digest TEXT NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (model, digest)
);
CREATE TABLE IF NOT EXISTS gates (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, digest TEXT NOT NULL,
    passed INTEGER NOT NULL, evidence TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    digest TEXT PRIMARY KEY, uri TEXT NOT NULL, format TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suspensions (
    target TEXT PRIMARY KEY, who TEXT NOT NULL, at REAL NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS passes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL, finished REAL,
    revision TEXT, result TEXT, message TEXT
);
"""

OBJECT_FIELDS = ("target", "kind", "name", "applied_digest", "applied_revision", "applied_at",
                 "attempted_digest", "attempted_revision", "attempted_at", "healthy_digest",
                 "healthy_since", "failed_digest", "failed_revision", "failed_reason",
                 "failed_at", "owed_digest", "wave", "status", "reason", "message", "updated_at")


class JournalCorrupt(StalledError):
    """The journal file is damaged: retrying cannot help, a person must move it aside."""

    reason: str = Reason.JOURNAL_CORRUPT


def corrupt_journal(path: Path, detail: str) -> JournalCorrupt:
    """One message naming the file and the documented recovery (docs/operations.md)."""
    detail = " ".join(detail.split())  # quick_check reports on several lines
    return JournalCorrupt(
        f"the journal {path} is damaged ({detail}); move it aside with its -wal and -shm "
        f"files (mv {path} {path}.corrupt) and start again: the fleet is re-observed and "
        "converged to the desired state, while the journal's history, failure marks, soak "
        "clocks and known-good digests start afresh (docs/operations.md, 'A damaged "
        "journal')")


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: float
    pass_id: int | None
    revision: str | None
    target: str | None
    kind: str | None
    name: str | None
    action: str
    phase: str
    intent: int | None
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "pass": self.pass_id, "revision": self.revision,
                "target": self.target, "kind": self.kind, "name": self.name,
                "action": self.action, "phase": self.phase, "intent": self.intent,
                "detail": self.detail}


class Journal:
    """One SQLite database; safe to share between the daemon's threads.

    ``readonly``: for commands that only look (``plan``, ``status``, ``history``): the file
    is opened read-only and never created or changed.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Opens and checks the file (``PRAGMA quick_check``): a damaged journal is refused
        with :class:`JournalCorrupt` rather than fail later, mid-pass, on every start."""
        self.path = path
        self._lock = threading.Lock()
        self._db = self._connect(path, readonly)
        try:
            problem = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise corrupt_journal(path, str(problem))
            if readonly:
                self._shim_older_schema()
            else:
                self._prepare()
        except sqlite3.DatabaseError as error:
            self._db.close()
            if not is_sqlite_corruption(error):
                raise
            raise corrupt_journal(path, str(error)) from None
        except JournalCorrupt:
            self._db.close()
            raise

    @staticmethod
    def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
        if readonly:
            return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False, isolation_level=None, timeout=10)
        path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                               timeout=10)

    def _prepare(self) -> None:
        """WAL, synchronous commits and the schema (after the check: a damaged file is
        never written to)."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(objects)")}
        if "owed_digest" not in columns:  # a journal written before restarts could be owed
            self._db.execute("ALTER TABLE objects ADD COLUMN owed_digest TEXT")
        if "wave" not in columns:  # a journal written before waves
            self._db.execute("ALTER TABLE objects ADD COLUMN wave TEXT")

    def _shim_older_schema(self) -> None:
        """A reader must not write, yet a journal the daemon has not opened since an upgrade
        lacks newer tables and columns (``status`` or ``plan`` right after installing a new
        version): they are stood in for by empty TEMP tables and a TEMP view, which SQLite
        resolves before the file's own schema."""
        tables = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        for statement in _SCHEMA.split(";"):
            found = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
            if found and found[1] not in tables:
                self._db.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
        columns = {row[1] for row in self._db.execute("PRAGMA main.table_info(objects)")}
        if columns and not set(OBJECT_FIELDS) <= columns:
            self._db.execute("CREATE TEMP VIEW objects AS SELECT " + ", ".join(
                name if name in columns else f"NULL AS {name}" for name in OBJECT_FIELDS)
                + " FROM main.objects")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def integrity_ok(self) -> bool:
        with self._lock:
            return bool(self._db.execute("PRAGMA quick_check").fetchone()[0] == "ok")

    def intents(self, action: str, key: ObjectKey, limit: int = 200) -> list[dict[str, Any]]:
        """The details of an object's newest intents of one action, newest first: what a
        change replaced (its ``from``) is read here, never from the live state, which a
        change stopped half-way may already have moved."""
        with self._lock:
            rows = self._db.execute(
                "SELECT detail FROM events WHERE name = ? AND target = ? AND kind = ? AND "
                "action = ? AND phase = 'intent' ORDER BY id DESC LIMIT ?",
                (key[2], key[0], key[1], action, limit)).fetchall()
        return [json.loads(detail) for (detail,) in rows]

    # Passes and events.

    def begin_pass(self, revision: str | None) -> int:
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO passes (started, revision) VALUES (?, ?)",
                                (time.time(), revision))
            return int(cursor.lastrowid or 0)

    def end_pass(self, pass_id: int, result: str, message: str,
                 revision: str | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE passes SET finished = ?, result = ?, message = ?, "
                       "revision = COALESCE(?, revision) WHERE id = ?",
                       (time.time(), result, redact_text(message), revision, pass_id))

    def last_pass(self) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT id, started, finished, revision, result, message "
                                   "FROM passes WHERE finished IS NOT NULL "
                                   "ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return dict(zip(("id", "started", "finished", "revision", "result", "message"), row,
                        strict=True))

    def record(self, action: str, phase: str, *, pass_id: int | None = None,
               revision: str | None = None, key: ObjectKey | None = None,
               intent: int | None = None, detail: Mapping[str, Any] | None = None) -> int:
        target, kind, name = key or (None, None, None)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO events (at, pass, revision, target, kind, name, action, phase, "
                "intent, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), pass_id, revision, target, kind, name, action, phase, intent,
                 redact_text(json.dumps(dict(detail or {}), sort_keys=True))))
            return int(cursor.lastrowid or 0)

    def intent(self, action: str, key: ObjectKey, *, pass_id: int, revision: str,
               detail: Mapping[str, Any]) -> int:
        """Written before the action runs; ``outcome`` closes it."""
        return self.record(action, "intent", pass_id=pass_id, revision=revision, key=key,
                           detail=detail)

    def outcome(self, intent: int, phase: str, detail: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            row = self._db.execute("SELECT pass, revision, target, kind, name, action FROM "
                                   "events WHERE id = ?", (intent,)).fetchone()
        pass_id, revision, target, kind, name, action = row
        self.record(action, phase, pass_id=pass_id, revision=revision,
                    key=(target, kind, name), intent=intent, detail=detail)

    def recover(self) -> list[Event]:
        """Close intents a crash left open; returns them (the next pass re-plans them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM events e WHERE phase = 'intent' AND NOT EXISTS "
                "(SELECT 1 FROM events o WHERE o.intent = e.id)").fetchall()
            open_passes = self._db.execute("SELECT id FROM passes WHERE finished IS NULL"
                                           ).fetchall()
        interrupted = [_event(row) for row in rows]
        for event in interrupted:
            self.outcome(event.id, "interrupted", {"note": "the daemon stopped before the "
                                                   "outcome was known; the next pass re-plans"})
        for (pass_id,) in open_passes:
            self.end_pass(pass_id, "interrupted", "the daemon stopped during this pass")
        return interrupted

    def events(self, name: str | None = None, limit: int = 200, *,
               action: str | None = None) -> list[Event]:
        """The newest ``limit`` events (of one object's name, or of one action), oldest
        first."""
        query = "SELECT * FROM events"
        parameters: tuple[Any, ...] = ()
        if name is not None:
            query += " WHERE name = ?"
            parameters = (name,)
        elif action is not None:
            query += " WHERE action = ?"
            parameters = (action,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?",
                                    (*parameters, limit)).fetchall()
        return [_event(row) for row in reversed(rows)]

    def analyses(self) -> dict[ObjectKey, dict[str, Any]]:
        """Each object's last analysis verdict (measured values included), for ``status``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT target, kind, name, at, revision, detail FROM events WHERE id IN "
                "(SELECT MAX(id) FROM events WHERE action = 'analysis' AND phase != 'intent' "
                "GROUP BY target, kind, name)").fetchall()
        return {(target, kind, name): {"at": at, "revision": revision, **json.loads(detail)}
                for target, kind, name, at, revision, detail in rows}

    # Per-object state.

    def _update(self, key: ObjectKey, current: dict[str, Any] | None = None,
                **fields: Any) -> None:
        """Write ``fields`` unless they are already so; ``current``: the row, if read."""
        current = current if current is not None else self.object(key)
        if current is not None and all(current[name] == value for name, value in fields.items()):
            return  # unchanged: no write, no fsync (no-op passes touch every object)
        columns = ", ".join(f"{name} = ?" for name in fields)
        fields = {name: redact_text(value) if isinstance(value, str) else value
                  for name, value in fields.items()}  # messages name URLs: never credentials
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO objects (target, kind, name) VALUES (?, ?, ?)",
                       key)
            db.execute(f"UPDATE objects SET {columns}, updated_at = ? "
                       "WHERE target = ? AND kind = ? AND name = ?",
                       (*fields.values(), time.time(), *key))

    def attempted(self, key: ObjectKey, digest: str, revision: str) -> None:
        self._update(key, attempted_digest=digest, attempted_revision=revision,
                     attempted_at=time.time())

    def applied(self, key: ObjectKey, digest: str, revision: str, healthy_since: float) -> None:
        """Applied and healthy. ``healthy_since`` keeps its earlier value for the same digest."""
        current = self.object(key)
        same = current is not None and current["applied_digest"] == digest
        since = (current["healthy_since"] if current and current["healthy_digest"] == digest
                 and current["healthy_since"] else healthy_since)
        self._update(key, current, applied_digest=digest, applied_revision=revision,
                     applied_at=current["applied_at"] if same and current else time.time(),
                     healthy_digest=digest, healthy_since=since, owed_digest=None,
                     status=Condition.READY, reason=Reason.CONVERGED, message=None)

    def owe_restart(self, key: ObjectKey, digest: str) -> None:
        """Content is in place (a repair) but its restart and check were deferred: the
        planner owes them (``History.unfinished``) until :meth:`applied`."""
        self._update(key, owed_digest=digest)

    def failed(self, key: ObjectKey, digest: str, revision: str, reason: str,
               message: str) -> None:
        self._update(key, failed_digest=digest, failed_revision=revision,
                     failed_reason=message, failed_at=time.time(), status=Condition.STALLED,
                     reason=reason, message=message)

    def recalled(self, key: ObjectKey, digest: str, revision: str, back_to: str | None,
                 message: str, *, healthy: bool = True) -> None:
        """A revision that failed in a later wave was taken back from this target: what it
        had before is applied (healthy, if its check passed) and the revision is marked
        failed here, in one write: a crash leaves the recall either owed or done."""
        healthy_digest = back_to if healthy else None
        self._update(key, applied_digest=back_to, applied_at=time.time(),
                     healthy_digest=healthy_digest,
                     healthy_since=time.time() if healthy_digest else None,
                     owed_digest=None, failed_digest=digest, failed_revision=revision,
                     failed_reason=message, failed_at=time.time(), status=Condition.STALLED,
                     reason=Reason.ROLLED_BACK, message=message)

    def wave(self, key: ObjectKey, wave: Mapping[str, Any] | None) -> None:
        """Where the object stands in its waves on this target (``status``)."""
        current = self.object(key)
        if (current["wave"] if current is not None else None) == wave:
            return  # unchanged, or no waves for an object not yet journaled
        self._update(key, current, wave=json.dumps(dict(wave), sort_keys=True) if wave else None)

    def condition(self, key: ObjectKey, status: str, reason: str | None,
                  message: str | None) -> None:
        self._update(key, status=status, reason=reason, message=message)

    def canonical(self, model: str, digest: str) -> None:
        """Record (or refresh: a revert makes an old digest the most recent again)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO canonical (model, digest, since) VALUES (?, ?, ?)",
                       (model, digest, time.time()))

    def remember_artifact(self, digest: str, uri: str, artifact_format: str) -> None:
        """Where a verified digest came from: a gauntlet Job fetches ``previous`` there."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO artifacts (digest, uri, format) VALUES (?, ?, ?)",
                       (digest, uri, artifact_format))

    def artifact_source(self, digest: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute("SELECT uri, format FROM artifacts WHERE digest = ?",
                                   (digest,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    # Gate verdicts, remembered so a digest is never re-run in a loop.

    def gate_verdict(self, key: str) -> tuple[bool, dict[str, Any]] | None:
        with self._lock:
            row = self._db.execute("SELECT passed, evidence FROM gates WHERE key = ?",
                                   (key,)).fetchone()
        return (bool(row[0]), json.loads(row[1])) if row else None

    def record_gate(self, key: str, model: str, digest: str, passed: bool,
                    evidence: Mapping[str, Any]) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO gates VALUES (?, ?, ?, ?, ?, ?)",
                       (key, model, digest, int(passed), json.dumps(dict(evidence)),
                        time.time()))

    def forget_gates(self, model: str, digest: str | None = None) -> int:
        """``gauntlet --retry``: the next evaluation runs again."""
        query, parameters = "DELETE FROM gates WHERE model = ?", [model]
        if digest is not None:
            query += " AND digest = ?"
            parameters.append(digest)
        with self._transaction() as db:
            return db.execute(query, parameters).rowcount

    def gpu_seconds_since(self, since: float) -> float:
        with self._lock:
            rows = self._db.execute("SELECT detail FROM events WHERE action = 'gauntlet' AND "
                                    "phase = 'done' AND at >= ?", (since,)).fetchall()
        return sum(float(json.loads(detail).get("gpuSeconds", 0)) for (detail,) in rows)

    def gauntlet_rates(self, runs: int = 5) -> dict[str, tuple[float, float]]:
        """Per gauntlet, the seconds and GPU-seconds one game took in its last ``runs``
        finished runs that played games (for ``plan``'s cost; remembered verdicts play
        none)."""
        totals: dict[str, list[float]] = {}
        with self._lock:
            rows = self._db.execute("SELECT detail FROM events WHERE action = 'gauntlet' AND "
                                    "phase = 'done' ORDER BY id DESC LIMIT 500").fetchall()
        for (detail,) in rows:
            record = json.loads(detail)
            games, name = record.get("games") or 0, record.get("gauntlet")
            if not games or not isinstance(name, str):
                continue
            seen = totals.setdefault(name, [0.0, 0.0, 0.0, 0.0])  # runs, games, s, GPU-s
            if seen[0] < runs:
                seen[0] += 1
                seen[1] += games
                seen[2] += float(record.get("seconds") or 0.0)
                seen[3] += float(record.get("gpuSeconds") or 0.0)
        return {name: (seconds / games, gpu / games)
                for name, (_, games, seconds, gpu) in totals.items()}

    def canonical_digests(self, model: str) -> list[str]:
        """Every digest that was canonical for the model, the most recent first."""
        with self._lock:
            rows = self._db.execute("SELECT digest FROM canonical WHERE model = ? "
                                    "ORDER BY since DESC", (model,)).fetchall()
        return [str(digest) for (digest,) in rows]

    def latest_canonical(self, model: str, other_than: str) -> str | None:
        """The model's most recent canonical digest that is not ``other_than``."""
        with self._lock:
            row = self._db.execute("SELECT digest FROM canonical WHERE model = ? AND "
                                   "digest != ? ORDER BY since DESC LIMIT 1",
                                   (model, other_than)).fetchone()
        return str(row[0]) if row else None

    def object(self, key: ObjectKey) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(OBJECT_FIELDS)} FROM objects WHERE "
                                   "target = ? AND kind = ? AND name = ?", key).fetchone()
        return _object_row(row) if row else None

    def objects(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(OBJECT_FIELDS)} FROM objects "
                                    "ORDER BY target, kind, name").fetchall()
        return [_object_row(row) for row in rows]

    # Stop the line: suspensions, written by ``reconciler suspend``/``resume`` (the
    # calling user's process), read by every plan and before every action.

    def suspend(self, targets: list[str], who: str, reason: str) -> None:
        """Suspend ``targets`` (``*``: all, declared later too); a suspension already in
        place is replaced, so the newest who and why show."""
        now = time.time()
        with self._transaction() as db:  # the suspension and its event, or neither
            for target in targets:
                db.execute("INSERT OR REPLACE INTO suspensions (target, who, at, reason) "
                           "VALUES (?, ?, ?, ?)", (target, who, now, redact_text(reason)))
                _insert_event(db, JournalAction.SUSPEND, Phase.DONE, (target, "Target", target),
                              {"who": who, "reason": reason}, now)

    def resume(self, targets: list[str], who: str) -> list[str]:
        """Lift the suspensions of ``targets`` (``*``: every suspension); which were
        lifted."""
        with self._transaction() as db:
            if ALL_TARGETS in targets:
                lifted = [row[0] for row in db.execute("SELECT target FROM suspensions")]
            else:
                lifted = [t for t in targets if db.execute(
                    "SELECT 1 FROM suspensions WHERE target = ?", (t,)).fetchone()]
            for target in lifted:
                db.execute("DELETE FROM suspensions WHERE target = ?", (target,))
                _insert_event(db, JournalAction.RESUME, Phase.DONE, (target, "Target", target),
                              {"who": who}, time.time())
        return lifted

    def suspensions(self) -> dict[str, Suspension]:
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                      "name = 'suspensions'").fetchone()
            rows = self._db.execute("SELECT target, who, at, reason FROM suspensions"
                                    ).fetchall() if exists else []
        return {row[0]: Suspension(*row) for row in rows}

    def history(self, now: float) -> History:
        """What the planner needs to know from the past (budgets counted back from ``now``)."""
        applied, failed, healthy, unfinished = {}, {}, {}, {}
        rows = self.objects()
        for row in rows:
            key = (row["target"], row["kind"], row["name"])
            if row["applied_digest"]:
                applied[key] = row["applied_digest"]
            attempted = row["attempted_digest"]
            if attempted and attempted not in (row["applied_digest"], row["failed_digest"]):
                unfinished[key] = attempted
            if row["owed_digest"]:
                unfinished[key] = row["owed_digest"]
            if row["failed_digest"]:
                failed[key] = (row["failed_digest"], row["failed_revision"])
            if row["healthy_digest"] and row["healthy_since"]:
                healthy[key] = (row["healthy_digest"], row["healthy_since"])
        known: dict[str, set[str]] = {}
        with self._lock:
            for model, digest in self._db.execute("SELECT model, digest FROM canonical"):
                known.setdefault(model, set()).add(digest)
            restarts = tuple(at for (at,) in self._db.execute(
                "SELECT at FROM events WHERE action = 'restart' AND phase = 'done' AND at > ?",
                (now - HOUR,)))
            # Promotions: flips to a new digest; putting back a drifted pointer is none.
            promotions = tuple(at for (at,) in self._db.execute(
                "SELECT o.at FROM events o JOIN events i ON o.intent = i.id WHERE "
                "o.action = 'flip' AND o.phase = 'done' AND o.at > ? AND "
                "COALESCE(json_extract(i.detail, '$.drift'), 0) = 0 AND "
                "COALESCE(json_extract(i.detail, '$.finish'), 0) = 0", (now - DAY,)))
        return History(applied, failed, healthy,
                       {model: frozenset(digests) for model, digests in known.items()},
                       unfinished, restarts, promotions, self.suspensions(),
                       recall_to=self._recall_to(rows),
                       failed_alone=self._failed_alone(rows))

    def _failed_alone(self, rows: list[dict[str, Any]]) -> frozenset[ObjectKey]:
        """Objects whose failure mark is no wave that failed: an inconclusive analysis
        (held, never rolled back) or a failed drift repair (the change that last brought
        the failed content was a repair: that host's trouble)."""
        found = set()
        for row in rows:
            if not row["failed_digest"]:
                continue
            key = (row["target"], row["kind"], row["name"])
            if row["reason"] == Reason.ANALYSIS_INCONCLUSIVE:
                found.add(key)
                continue
            change = "flip" if row["kind"] == "Model" else "deliver"
            latest = next((detail for detail in self.intents(change, key)
                           if detail.get("to") == row["failed_digest"]), None)
            if latest is not None and latest.get("drift"):
                found.add(key)
        return frozenset(found)

    def _recall_to(self, rows: list[dict[str, Any]]) -> dict[ObjectKey, tuple[str, str | None]]:
        """For each target holding content that failed on another target of the same
        object: what it had before (the ``from`` of the change that brought it, never a
        drift repair's). Failures are rare: only those objects are looked up."""
        alone = self._failed_alone(rows)
        failed_digests = {(row["kind"], row["name"], row["failed_digest"]) for row in rows
                          if row["failed_digest"]
                          and (row["target"], row["kind"], row["name"]) not in alone}
        found: dict[ObjectKey, tuple[str, str | None]] = {}
        for row in rows:
            digest = row["applied_digest"]
            if not digest or (row["kind"], row["name"], digest) not in failed_digests \
                    or row["failed_digest"] == digest:
                continue
            key = (row["target"], row["kind"], row["name"])
            change = "flip" if row["kind"] == "Model" else "deliver"
            for detail in self.intents(change, key):
                if detail.get("to") != digest or detail.get("drift"):
                    continue
                before = detail.get("from")
                if change == "flip" and before is not None:  # a link: the digest it named
                    before = detail.get("fromDigest")  # none: unknown, never put back blindly
                if before == digest:
                    continue  # a retry of a change stopped half-way: its origin is older
                if (before is None) == (detail.get("from") is None):
                    found[key] = (digest, before if isinstance(before, str) else None)
                break
        return found


def _object_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """An object's row; ``wave`` decoded (None: the object's targets wait for none)."""
    found = dict(zip(OBJECT_FIELDS, row, strict=True))
    found["wave"] = json.loads(found["wave"]) if found["wave"] else None
    return found


def _insert_event(db: sqlite3.Connection, action: str, phase: str, key: ObjectKey,
                  detail: Mapping[str, Any], at: float) -> None:
    """An event written inside a caller's transaction (with the state it records)."""
    db.execute("INSERT INTO events (at, target, kind, name, action, phase, detail) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)",
               (at, *key, action, phase, redact_text(json.dumps(dict(detail), sort_keys=True))))


def _event(row: tuple[Any, ...]) -> Event:
    identifier, at, pass_id, revision, target, kind, name, action, phase, intent, detail = row
    return Event(identifier, at, pass_id, revision, target, kind, name, action, phase, intent,
                 json.loads(detail))
