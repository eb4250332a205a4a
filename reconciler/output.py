"""How every command prints: ``-o text|json|yaml`` and colour, in one place.

A command builds one plain value (dicts, lists, strings, numbers) and a text rendering of
it; ``emit`` prints whichever the user asked for. JSON is indented, keys in the order the
command built them (stable across runs: scripts and ``jq`` rely on it); YAML is the same
value, in the same order, through ruamel.yaml's safe dumper. Text is for people and may
change; JSON and YAML are the contract (docs/output.md).

Colour follows https://no-color.org: ``--color auto`` (the default) colours only a terminal
and never when ``NO_COLOR`` is set to anything non-empty or ``TERM`` is ``dumb``;
``--color always`` and ``never`` override both.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from ruamel.yaml import YAML

FORMATS = ("text", "json", "yaml")
COLOR_CHOICES = ("auto", "always", "never")


def add_output_flags(parser: argparse.ArgumentParser, *, color: bool = False) -> None:
    """``-o/--output`` (and ``--color`` for commands that colour): one line per command."""
    parser.add_argument("-o", "--output", choices=FORMATS, default="text",
                        help="the output format: text for people (default); json or yaml "
                        "for scripts, stable keys (docs/output.md)")
    if color:
        parser.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                            help="colour a diff: auto (a terminal without NO_COLOR, the "
                            "default), always, never")


def render(value: Any, fmt: str) -> str:
    """``value`` as JSON or YAML text, ending in a newline."""
    if fmt == "json":
        return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.allow_unicode = True
        # The same key order as JSON (ruamel annotates this attribute as None).
        yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
        buffer = io.StringIO()
        # Through JSON first: YAML then holds exactly what JSON holds (the safe dumper
        # refuses a str enum such as a gate's reason, and writes tuples as !!python tags).
        yaml.dump(json.loads(json.dumps(value)), buffer)
        return buffer.getvalue()
    raise ValueError(f"not a data format: {fmt}")


def emit(args: argparse.Namespace, value: Any, text: str | Callable[[], str],
         stream: TextIO | None = None) -> None:
    """Print ``value`` as ``args.output`` asks, or ``text`` (a string, or a function that
    makes one, so that text-only work is skipped for JSON) for ``-o text``."""
    out = stream if stream is not None else sys.stdout
    fmt = getattr(args, "output", "text")
    if fmt == "text":
        # Text carries what others wrote (health check output, a gate's message): shown,
        # never obeyed by the terminal.
        out.write(printable(text if isinstance(text, str) else text()))
    else:
        out.write(render(value, fmt))


def wants_data(args: argparse.Namespace) -> bool:
    """True when the user asked for JSON or YAML: human chatter then goes to stderr."""
    return getattr(args, "output", "text") != "text"


def use_color(choice: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to colour ``stream``, from ``--color`` and the environment."""
    if choice in ("always", "never"):
        return choice == "always"
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except ValueError:  # a closed stream
        return False


# C0 controls but tab and newline, DEL and C1: what repository content must never send to a
# terminal (escape sequences can retitle it, move the cursor, hide lines of a diff).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN``: repository content (a diff)
    is untrusted, and a terminal obeys what it is sent."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


_RESET = "\x1b[0m"
# Leading symbol (after indentation) of a plan or diff line -> SGR code: terraform's
# colours (+ create green, ~ update yellow, - delete red), * a pointer flip, git's for hunks.
_LINE_COLORS = (("+++ ", "1"), ("--- ", "1"), ("@@", "36"), ("+", "32"), ("-", "31"),
                ("~", "33"), ("*", "35"), ("!", "31"))
_INDENT = re.compile(r"^(\s*)(.*)$", re.DOTALL)


def color_lines(text: str) -> str:
    """``text`` with diff and plan lines coloured by their leading symbol."""
    painted = []
    for line in text.split("\n"):
        match = _INDENT.match(line)
        assert match is not None  # the pattern matches every string
        indent, body = match.groups()
        code = next((sgr for prefix, sgr in _LINE_COLORS if body.startswith(prefix)), None)
        painted.append(f"{indent}\x1b[{code}m{body}{_RESET}" if code and body else line)
    return "\n".join(painted)
