"""One logging setup for the daemon and the command line (a leaf: every layer may log).

Lines go to stderr, as text for people or JSON for machines (``--log-format``), one per
action and per decision. Modules log through ``logging.getLogger(__name__)``, below the
``reconciler`` logger that :func:`configure` sets up, and pass machine-readable fields
with ``extra=fields(target=..., kind=..., name=..., revision=...)``: JSON lines carry
them as keys, text lines only say the message (written to name the same things).

When stderr is the journal (systemd sets ``JOURNAL_STREAM`` to its device and inode),
every line starts with an sd-daemon priority prefix (``<3>`` for an error), which journald
turns into the entry's priority (``SyslogLevelPrefix=``, on by default); elsewhere a text
line starts with its time and level.

Promise 6: whatever a line says, URLs in it lose their credentials (``redact_text``) on the
way out, so a library's error message that quotes a remote cannot leak its token.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

from reconciler.redaction import redact_text

ROOT = "reconciler"
FORMATS = ("text", "json")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMAT_ENV = "RECONCILER_LOG_FORMAT"
LEVEL_ENV = "RECONCILER_LOG_LEVEL"

# sd-daemon(3) priorities, as syslog numbers them.
_JOURNAL_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4,
                     logging.ERROR: 3, logging.CRITICAL: 2}


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra`` of a log call: fields a JSON line carries (None values are left out)."""
    return {"fields": {key: value for key, value in values.items() if value is not None}}


def journal_priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between two round down to the
    more severe: 35 is a warning, 45 an error)."""
    for level in sorted(_JOURNAL_PRIORITY):
        if levelno <= level:
            return _JOURNAL_PRIORITY[level]
    return _JOURNAL_PRIORITY[logging.CRITICAL]


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """Whether file descriptor 2 is the stream systemd connected to the journal."""
    stream = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        status = os.fstat(2)
        return (int(device), int(inode)) == (status.st_dev, status.st_ino)
    except (ValueError, OSError):
        return False


# C0 controls but the tab, DEL and C1 controls: in a text line they are shown escaped, so
# that text a message quotes (a health command's output) cannot drive a terminal.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x09), *range(0x0a, 0x20),
                                                  *range(0x7f, 0xa0))}


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    values = getattr(record, "fields", None)
    return dict(values) if isinstance(values, Mapping) else {}


def _when(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z warning message``; under journald ``<4>message``."""

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        # Each line break starts an indented line (or a journal entry of its own), never
        # a line that looks like one of ours.
        lines = [line.translate(_CONTROLS) for line in redact_text(text).splitlines()] or [""]
        if self._journal:  # each line is an entry of its own: each gets the priority
            prefix = f"<{journal_priority(record.levelno)}>"
            return "\n".join(prefix + line for line in lines)
        head = f"{_when(record)} {record.levelname.lower():<7} "
        return head + ("\n" + " " * len(head)).join(lines)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the record's fields."""

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _when(record), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage()}
        for key, value in _record_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["error"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        text = json.dumps(_redacted(line), default=str, ensure_ascii=False)
        return f"<{journal_priority(record.levelno)}>{text}" if self._journal else text


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is written (a test's capture, a
    redirection made after the setup), never to a stream closed since."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class LogSettingError(ValueError):
    """A log format or level nobody knows (from a flag's default or the environment)."""


def configure(log_format: str | None = None, level: str | None = None,
              environ: Mapping[str, str] | None = None) -> None:
    """Set up the ``reconciler`` logger: the flags win over ``RECONCILER_LOG_FORMAT`` and
    ``RECONCILER_LOG_LEVEL``; the defaults are text and info. Calling it again replaces
    the previous setup."""
    environ = os.environ if environ is None else environ
    chosen_format = (log_format or environ.get(FORMAT_ENV) or "text").lower()
    chosen_level = (level or environ.get(LEVEL_ENV) or "info").lower()
    if chosen_format not in FORMATS:
        raise LogSettingError(f"log format {chosen_format!r}: one of {', '.join(FORMATS)}")
    if chosen_level not in LEVELS:
        raise LogSettingError(f"log level {chosen_level!r}: one of {', '.join(LEVELS)}")
    journal = stderr_is_journal(environ)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(journal) if chosen_format == "json"
                         else TextFormatter(journal))
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(LEVELS[chosen_level])
