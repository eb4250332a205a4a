"""Durations, and the path rules every reference goes through."""

from __future__ import annotations

import pytest

from reconciler.durations import format_duration, parse_duration
from reconciler.source.snapshot import Entry, PathError, normalize, resolve


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200),
                                               ("1h30m", 5400), ("1d", 86400),
                                               ("250ms", 0.25), ("1m30s", 90)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "30", "30 m", "m", "1.5h", "30m1h", "-5s", "5S", "1h1h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("path", "normal"), [("a/b.py", "a/b.py"), ("./a//b.py", "a/b.py")])
def test_normalize(path: str, normal: str) -> None:
    assert normalize(path) == normal


@pytest.mark.parametrize(("path", "rule"), [("/etc/passwd", "path-absolute"),
                                            ("C:/x", "path-absolute"),
                                            ("a/../../x", "path-escape"), ("..", "path-escape"),
                                            ("a/../b", "path-escape"), (".", "path-escape"),
                                            ("a\\b", "path-separator"), ("", "path-absolute")])
def test_paths_must_stay_inside(path: str, rule: str) -> None:
    with pytest.raises(PathError) as raised:
        normalize(path)
    assert raised.value.rule == rule


def _entries(*items: Entry) -> dict[str, Entry]:
    return {item.path: item for item in items}


def test_resolve_follows_links_that_stay_inside() -> None:
    entries = _entries(Entry("lib/real.py", "file", "1", 1),
                       Entry("alias.py", "link", "2", 11, "lib/real.py"),
                       Entry("lib/up.py", "link", "3", 8, "../alias.py"))
    assert resolve(entries, "lib/up.py").path == "lib/real.py"


@pytest.mark.parametrize(("target", "rule"), [("../../etc/passwd", "symlink-escape"),
                                              ("/etc/passwd", "symlink-escape"),
                                              ("loop.py", "symlink-loop"),
                                              ("nowhere.py", "file-missing")])
def test_resolve_refuses_links_out_loops_and_missing_files(target: str, rule: str) -> None:
    entries = _entries(Entry("loop.py", "link", "1", 7, target))
    with pytest.raises(PathError) as raised:
        resolve(entries, "loop.py")
    assert raised.value.rule == rule
