"""The log's format: JSON lines with fields, levels that filter, journald priority prefixes
when stderr is the journal, and no URL credentials whatever a message quotes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.logs import LogSettingError, configure, fields, journal_priority

TOKEN = "ghp_s3cr3tT0kenNeverShown"
LEAKY = f"fetch https://ci:{TOKEN}@git.example/fleet.git?X-Amz-Signature={TOKEN}x failed"


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    yield logging.getLogger("reconciler.test")
    configure("text", "info", environ={})  # what the next test finds


def test_json_lines_carry_level_message_and_fields(
        logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "debug", environ={})
    logger.info("applied update Strategy/app on edge", extra=fields(
        target="edge", kind="Strategy", name="app", revision="main@sha1:abc", reason=None))
    logger.debug("in sync")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["level"] == "info" and first["message"].startswith("applied update")
    assert (first["target"], first["kind"], first["name"], first["revision"]) == (
        "edge", "Strategy", "app", "main@sha1:abc")
    assert "reason" not in first, "an absent field is left out, not null"
    assert first["logger"] == "reconciler.test" and first["time"].endswith("Z")
    assert second["level"] == "debug"


def test_the_level_hides_what_is_below_it(logger: logging.Logger,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    configure("text", "warning", environ={})
    logger.info("an info line")
    logger.warning("a warning line")
    said = capsys.readouterr().err
    assert "an info line" not in said and "warning a warning line" in said


def test_the_environment_sets_defaults_and_the_flags_win(
        logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    configure(None, None, environ={"RECONCILER_LOG_FORMAT": "json",
                                   "RECONCILER_LOG_LEVEL": "error"})
    logger.warning("hidden")
    logger.error("shown")
    assert [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()] == [
        "shown"]
    configure("text", "info", environ={"RECONCILER_LOG_FORMAT": "json"})
    logger.info("plain")
    assert capsys.readouterr().err.split(maxsplit=2)[1:] == ["info", "plain\n"]
    with pytest.raises(LogSettingError, match="log level 'loud'"):
        configure(None, None, environ={"RECONCILER_LOG_LEVEL": "loud"})


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_credentials_never_reach_the_log(log_format: str, logger: logging.Logger,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    configure(log_format, "info", environ={})
    logger.error(LEAKY, extra=fields(repository=f"https://x:{TOKEN}@git.example/r.git"))
    try:
        raise OSError(LEAKY)
    except OSError:
        logger.exception("a traceback quotes it too")
    said = capsys.readouterr().err
    assert said.count("https://git.example/fleet.git failed") == 2  # message, traceback
    if log_format == "json":  # text lines show the message only
        assert json.loads(said.splitlines()[0])["repository"] == "https://git.example/r.git"
    assert TOKEN not in said


def test_journald_priorities() -> None:
    assert [journal_priority(level) for level in (
        logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL,
        35)] == [7, 6, 4, 3, 2, 3]


def _journal_stream(path: Path) -> str:
    status = os.stat(path)
    return f"{status.st_dev}:{status.st_ino}"


def test_an_error_lands_at_priority_3_when_stderr_is_the_journal(tmp_path: Path) -> None:
    """The daemon cannot start (its settings are a folder): the line systemd's journal gets
    starts with <3>. Without JOURNAL_STREAM, or with another stream's, no prefix."""
    settings = tmp_path / "reconciler.yaml"
    settings.mkdir()
    said = {}
    for case in ("journal", "elsewhere"):
        stderr = tmp_path / f"{case}.err"
        with open(stderr, "wb") as sink:
            stream = _journal_stream(stderr if case == "journal" else settings)
            done = subprocess.run([sys.executable, "-m", "reconciler", "run", "--config",
                                   str(settings)], stdout=subprocess.DEVNULL, stderr=sink,
                                  env={**os.environ, "JOURNAL_STREAM": stream}, timeout=60,
                                  check=False)
        assert done.returncode == 1
        said[case] = stderr.read_text()
    assert said["journal"].startswith("<3>reconciler run: "), said["journal"]
    assert "cannot read settings" in said["journal"]
    assert not said["elsewhere"].startswith("<"), said["elsewhere"]
    assert " error   reconciler run: " in said["elsewhere"]


def test_a_bad_level_in_the_environment_is_refused_clearly() -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler", "manifest", "/nonexistent"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "RECONCILER_LOG_LEVEL": "chatty"})
    assert done.returncode == 1
    assert "log level 'chatty': one of debug, info, warning, error" in done.stderr


def test_repository_text_cannot_forge_lines_or_drive_the_terminal(
        logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    """A message quoting repository-controlled text (a health command's output, an object's
    message): a line break cannot start a line that looks like the daemon's own, and control
    characters (a terminal's escape sequences, a backspace over the indent) are shown
    escaped, not obeyed."""
    configure("text", "info", environ={})
    logger.info("health check said: ok\n2026-01-01T00:00:00.000Z error   forged"
                "\r\x08\x08\x1b[2K\x1b]0;title\x07\x00\x7f\x9b done")
    said = capsys.readouterr().err
    lines = said.splitlines()
    assert len(lines) == 3 and said.count("\n") == 3
    assert lines[0].split(maxsplit=2)[1] == "info"
    assert all(line.startswith(" " * 10) for line in lines[1:]), lines
    assert not any((ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f for c in said), said
    assert "\\x1b[2K\\x1b]0;title\\x07\\x00\\x7f\\x9b done" in said


def test_authorization_headers_an_error_quotes_are_redacted(
        logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    """A receiver that echoes the request back in its error answer (as debugging servers
    do) must not put the bearer token read from a file into the log."""
    configure("json", "info", environ={})
    logger.warning(f'notify: HTTP 401: {{"headers": {{"Authorization": "Bearer {TOKEN}"}}}}')
    logger.warning(f"proxy said: authorization: Basic {TOKEN}== refused")
    logger.warning(f"curl -H 'Authorization: token {TOKEN}' failed")
    said = capsys.readouterr().err
    assert TOKEN not in said, said
    assert said.count("<redacted>") == 3
    for line in said.splitlines():
        json.loads(line)
