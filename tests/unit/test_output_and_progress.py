"""The shared output machinery (-o, colour) and progress lines, with tables and fake clocks."""

from __future__ import annotations

import argparse
import enum
import io
import json

import pytest
from ruamel.yaml import YAML

from reconciler.output import add_output_flags, color_lines, emit, render, use_color
from reconciler.progress import ByteProgress, GameProgress, StatusLine, format_eta

VALUE = {"z": 1, "a": [{"name": "x: y", "n": None}], "ok": True, "text": "ünï"}


def test_json_and_yaml_say_the_same_in_the_same_key_order() -> None:
    as_json = render(VALUE, "json")
    as_yaml = render(VALUE, "yaml")
    assert json.loads(as_json) == VALUE == YAML(typ="safe", pure=True).load(as_yaml)
    assert list(json.loads(as_json)) == ["z", "a", "ok", "text"]
    assert as_yaml.index("z:") < as_yaml.index("a:") < as_yaml.index("ok:")


def test_emit_prints_the_text_only_for_text_and_never_builds_it_otherwise() -> None:
    parser = argparse.ArgumentParser()
    add_output_flags(parser)
    out = io.StringIO()
    emit(parser.parse_args([]), VALUE, lambda: "for people\n", out)
    assert out.getvalue() == "for people\n"

    def refuse() -> str:
        raise AssertionError("text rendered for -o json")

    out = io.StringIO()
    emit(parser.parse_args(["-o", "json"]), VALUE, refuse, out)
    assert json.loads(out.getvalue()) == VALUE
    with pytest.raises(SystemExit):
        parser.parse_args(["-o", "xml"])


class _Terminal(io.StringIO):
    def __init__(self, tty: bool = True) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(("choice", "tty", "env", "expected"), [
    ("auto", True, {}, True),
    ("auto", False, {}, False),
    ("auto", True, {"NO_COLOR": "1"}, False),
    ("auto", True, {"NO_COLOR": ""}, True),  # no-color.org: set *and non-empty*
    ("auto", True, {"TERM": "dumb"}, False),
    ("always", False, {"NO_COLOR": "1"}, True),  # an explicit flag beats the environment
    ("never", True, {}, False),
])
def test_colour_follows_the_flag_the_terminal_and_no_color(
        choice: str, tty: bool, env: dict[str, str], expected: bool) -> None:
    assert use_color(choice, _Terminal(tty), env) is expected


def test_plan_and_diff_lines_are_coloured_by_their_symbol() -> None:
    text = ("  + Strategy s: create\n  ~ Config c: update\n      --- a/x\n      +++ b/x\n"
            "      @@ -1 +1 @@\n      -old\n      +new\n  in sync\n")
    painted = color_lines(text)
    assert "  \x1b[32m+ Strategy s: create\x1b[0m" in painted
    assert "\x1b[33m~ Config" in painted and "\x1b[31m-old" in painted
    assert "\x1b[32m+new" in painted and "\x1b[36m@@" in painted
    assert "\x1b[1m+++ b/x" in painted
    assert "  in sync\n" in painted  # plain lines stay plain
    assert painted.replace("\x1b[0m", "").count("\x1b[") == 7


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_byte_progress_draws_one_line_with_rate_and_eta_at_most_ten_times_a_second() -> None:
    clock, screen = _Clock(), _Terminal()
    progress = ByteProgress("hashing m.pt", screen, clock)
    clock.now += 1.0
    progress(64 << 20, 256 << 20)  # 64 MiB in 1 s: 3 s to go
    clock.now += 0.05
    progress(96 << 20, 256 << 20)  # too soon after the last redraw: skipped
    clock.now += 1.0
    progress(128 << 20, 256 << 20)
    drawn = screen.getvalue()
    assert drawn.count("\r") == 2 and "\n" not in drawn
    assert "hashing m.pt: 64.0 MiB of 256.0 MiB (25%), 64.0 MiB/s, ETA 3s" in drawn
    clock.now += 1.0
    progress(256 << 20, 256 << 20)
    progress.finish()
    assert screen.getvalue().endswith("(100%), 83.9 MiB/s, done in 3s\x1b[K\n")


def test_a_download_heard_of_late_counts_its_rate_from_the_first_bytes_heard() -> None:
    clock, screen = _Clock(), _Terminal()
    progress = ByteProgress("fetching policy", screen, clock, from_first_call=True)
    clock.now += 100.0  # made long before the first bytes: that time is no part of it
    progress(16 << 20, 64 << 20)
    assert screen.getvalue() == "\rfetching policy: 16.0 MiB of 64.0 MiB (25%)\x1b[K"
    clock.now += 0.01  # sooner than a redraw, but the first that can tell a rate
    progress(17 << 20, 64 << 20)
    assert screen.getvalue().endswith("(27%), 100.0 MiB/s, ETA 0s\x1b[K")
    clock.now += 0.01
    progress(18 << 20, 64 << 20)  # now the redraw limit holds again
    assert screen.getvalue().count("\r") == 2


def test_byte_progress_is_silent_off_a_terminal_and_without_any_work() -> None:
    pipe = _Terminal(tty=False)
    progress = ByteProgress("x", pipe)
    progress(1, 2)
    progress.finish()
    assert pipe.getvalue() == ""
    idle = _Terminal()
    ByteProgress("x", idle).finish()
    assert idle.getvalue() == ""


def test_status_line_rewrites_in_place_with_the_time_spent() -> None:
    clock, screen = _Clock(), _Terminal()
    status = StatusLine(screen, clock)
    clock.now += 75
    status("gauntlet g: random score 0.9 after 40 games")
    status.finish()
    assert screen.getvalue() == ("\rgauntlet g: random score 0.9 after 40 games (1m15s)"
                                 "\x1b[K\n")


@pytest.mark.parametrize(("seconds", "shown"), [(0.4, "0s"), (59, "59s"), (61, "1m01s"),
                                                (3725, "1h02m"), (-3, "0s")])
def test_eta_reads_like_a_clock(seconds: float, shown: str) -> None:
    assert format_eta(seconds) == shown


def test_game_progress_says_its_total_and_time_left_are_ceilings() -> None:
    clock, screen = _Clock(), _Terminal()
    progress = GameProgress("gauntlet for m", screen, clock)
    clock.now += 10
    progress(40, 400)
    assert screen.getvalue() == ("\rgauntlet for m: 40 of at most 400 games (10%), "
                                 "4.0 games/s, ETA at most 1m30s\x1b[K")


def test_games_of_every_opponent_add_up_against_the_sum_of_their_budgets() -> None:
    from reconciler.desired.documents import Gauntlet, Origin
    from reconciler.prcheck import _game_counter

    seen: list[tuple[int, int]] = []
    spec = {"match": {"game": "connect4", "games": 100, "opponents": [
        {"name": "random", "minScore": 0.8}, {"name": "heuristic", "minScore": 0.6}]}}
    gauntlet = Gauntlet("g", Origin("g.yaml", "0" * 40, 0, 1), spec)
    count = _game_counter(gauntlet, lambda done, total: seen.append((done, total)))
    count("random", 20)
    count("heuristic", 30)
    assert seen == [(20, 200), (50, 200)]
    silent = _game_counter(None, None)
    silent("random", 5)  # a metrics gate, or nobody listening: nothing breaks


def test_yaml_prints_what_json_prints_for_string_enums_and_tuples() -> None:
    class Reason(enum.StrEnum):
        PASSED = "GatePassed"

    value = {"reason": Reason.PASSED, "pair": (1, 2)}
    assert YAML(typ="safe", pure=True).load(render(value, "yaml")) == \
        json.loads(render(value, "json")) == {"reason": "GatePassed", "pair": [1, 2]}


def test_progress_draws_nothing_on_a_dumb_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """TERM=dumb (an editor's shell buffer) cannot erase a line: \\x1b[K would show as text."""
    monkeypatch.setenv("TERM", "dumb")
    screen = _Terminal()
    progress, steps = ByteProgress("x", screen), StatusLine(screen)
    progress(1, 2)
    steps("applying")
    progress.finish()
    steps.finish()
    assert screen.getvalue() == ""
