"""Shell completion scripts for bash, zsh and fish, generated from the argparse parser.

Generated, not written by hand, so that a new command, flag or choice completes the day it
is added. The parser is read once into a small model (commands, their flags, which flags
take a value and from which choices, which values are files or folders); each shell's
script is that model spelled in the shell's own completion language. Completion suggests,
it never runs anything: the scripts call no program, the reconciler included.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")
# Metavars whose values are paths: complete file names (or only folders) there.
_FILE_METAVARS = frozenset({"FILE", "PATH", "PATH_OR_URL"})
_DIR_METAVARS = frozenset({"DIR"})


@dataclass(frozen=True, slots=True)
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    paths: str = ""  # "file", "dir" or "" (a free value)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    options: tuple[Option, ...]
    choices: tuple[str, ...] = ()  # of the first positional argument
    paths: str = ""

    def value_options(self) -> list[Option]:
        return [option for option in self.options if option.takes_value]


def _summary(text: str | None) -> str:
    """A help string's first clause, one line, for a completion menu."""
    if not text or text == argparse.SUPPRESS:
        return ""
    text = " ".join(text.replace("%%", "%").split())
    text = re.sub(r"%\(\w+\)s", "", text)
    first = re.split(r"(?<!e\.g)(?<=[.;:])\s|\s\(", text, maxsplit=1)[0].rstrip(".;:")
    return first if len(first) <= 70 else first[:67] + "..."


def _paths(action: argparse.Action) -> str:
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    return "dir" if metavar in _DIR_METAVARS else "file" if metavar in _FILE_METAVARS else ""


def _options(parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    found = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        choices = tuple(str(c) for c in action.choices) if action.choices else ()
        found.append(Option(tuple(action.option_strings), _summary(action.help),
                            action.nargs != 0, choices, _paths(action)))
    return tuple(found)


def _subcommands(parser: argparse.ArgumentParser
                 ) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise ValueError("the parser has no subcommands")


def model(parser: argparse.ArgumentParser) -> tuple[Command, list[Command]]:
    """The top level (its flags) and every subcommand, from ``parser``."""
    commands = _subcommands(parser)
    helps = {choice.dest: _summary(choice.help) for choice in commands._choices_actions}
    found = []
    for name, sub in commands.choices.items():
        positional = next((a for a in sub._actions if not a.option_strings), None)
        choices = tuple(str(c) for c in positional.choices) if positional is not None \
            and positional.choices else ()
        found.append(Command(name, helps.get(name, ""), _options(sub), choices,
                             _paths(positional) if positional is not None else ""))
    return Command(parser.prog, _summary(parser.description), _options(parser)), found


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (one of SHELLS)."""
    top, commands = model(parser)
    writers = {"bash": _bash, "zsh": _zsh, "fish": _fish}
    return writers[shell](top, commands)


# --- bash ---------------------------------------------------------------------------

def _sq(text: str) -> str:
    """Single-quoted for bash and zsh."""
    return "'" + text.replace("'", "'\\''") + "'"


def _bash_values(option_or_command: Option | Command, indent: str) -> str:
    """Lines that fill COMPREPLY with a value's candidates, then return."""
    if option_or_command.choices:
        words = " ".join(option_or_command.choices)
        return f"{indent}COMPREPLY=($(compgen -W {_sq(words)} -- \"$cur\")); return"
    if option_or_command.paths:
        flag = "-d" if option_or_command.paths == "dir" else "-f"
        return (f"{indent}compopt -o filenames 2>/dev/null\n"
                f"{indent}COMPREPLY=($(compgen {flag} -- \"$cur\")); return")
    return f"{indent}return"


def _bash_prev_cases(command: Command, indent: str) -> list[str]:
    lines = []
    for option in command.value_options():
        lines.append(f"{indent}{'|'.join(option.flags)})")
        lines.append(_bash_values(option, indent + "    ") + ";;")
    return lines


def _flags(command: Command) -> str:
    return " ".join(flag for option in command.options for flag in option.flags)


def _bash(top: Command, commands: list[Command]) -> str:
    name = top.name
    skip = "|".join(f for o in top.value_options() for f in o.flags)
    lines = [
        f"# bash completion for {name}; generated by `{name} completion bash`.",
        f"# Install: source <({name} completion bash), or save it as",
        f"# ~/.local/share/bash-completion/completions/{name}",
        f"_{name}() {{",
        "    local cur prev cmd i word",
        '    cur="${COMP_WORDS[COMP_CWORD]}"',
        '    prev=""; (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"',
        "    # --flag=value: bash splits at '=', so the flag is two words back",
        '    if [[ $cur == "=" ]]; then cur=""; prev="${COMP_WORDS[COMP_CWORD-1]}"; fi',
        '    if [[ $prev == "=" ]] && (( COMP_CWORD > 1 )); then '
        'prev="${COMP_WORDS[COMP_CWORD-2]}"; fi',
        '    cmd=""',
        "    for (( i = 1; i < COMP_CWORD; i++ )); do",
        '        word="${COMP_WORDS[i]}"',
        '        case "$word" in',
    ]
    if skip:
        lines += [f"            {skip}) (( i++ ));;"]
    lines += [
        "            -*) ;;",
        '            *) cmd="$word"; break;;',
        "        esac",
        "    done",
        '    case "$cmd" in',
        '    "")',
        '        case "$prev" in',
        *_bash_prev_cases(top, "        "),
        "        esac",
        '        if [[ $cur == -* ]]; then',
        f"            COMPREPLY=($(compgen -W {_sq(_flags(top))} -- \"$cur\"))",
        "        else",
        f"            COMPREPLY=($(compgen -W {_sq(' '.join(c.name for c in commands))}"
        ' -- "$cur"))',
        "        fi;;",
    ]
    for command in commands:
        flags = _flags(command)
        lines += [
            f"    {command.name})",
            '        case "$prev" in',
            *_bash_prev_cases(command, "        "),
            "        esac",
            '        if [[ $cur == -* ]]; then',
            f"            COMPREPLY=($(compgen -W {_sq(flags)} -- \"$cur\"))",
            "        else",
            _bash_values(command, "            "),
            "        fi;;",
        ]
    lines += ["    esac", "}", f"complete -F _{name} {name}", ""]
    return "\n".join(lines)


# --- zsh ----------------------------------------------------------------------------

def _zq(text: str) -> str:
    """A ``_describe`` entry's description: colons are its separator."""
    return text.replace(":", "\\:")


def _zsh_values(option_or_command: Option | Command, indent: str) -> str:
    if option_or_command.choices:
        words = " ".join(_sq(c) for c in option_or_command.choices)
        return f"{indent}compadd -- {words}; return"
    if option_or_command.paths == "dir":
        return f"{indent}_files -/; return"
    if option_or_command.paths == "file":
        return f"{indent}_files; return"
    return f"{indent}return 1"


def _zsh_prev_cases(command: Command, indent: str) -> list[str]:
    lines = []
    for option in command.value_options():
        lines.append(f"{indent}({'|'.join(option.flags)})")
        lines.append(_zsh_values(option, indent + "    ") + ";;")
    return lines


def _zsh_described(entries: list[tuple[str, str]], label: str, var: str) -> list[str]:
    body = " ".join(_sq(f"{_zq(word)}:{_zq(text)}" if text else _zq(word))
                    for word, text in entries)
    return [f"        local -a {var}; {var}=({body})", f"        _describe {_sq(label)} {var}"]


def _zsh(top: Command, commands: list[Command]) -> str:
    name = top.name
    skip = "|".join(f for o in top.value_options() for f in o.flags)
    lines = [
        f"#compdef {name}",
        f"# zsh completion for {name}; generated by `{name} completion zsh`.",
        f'# Install: {name} completion zsh > "${{fpath[1]}}/_{name}" (then compinit),',
        f"# or source <({name} completion zsh) after compinit.",
        f"_{name}() {{",
        "    local cur prev cmd i word",
        '    cur="${words[CURRENT]}"',
        '    prev="${words[CURRENT-1]}"',
        '    cmd=""',
        "    for (( i = 2; i < CURRENT; i++ )); do",
        '        word="${words[i]}"',
        '        case "$word" in',
    ]
    if skip:
        lines += [f"            ({skip}) (( i++ ));;"]
    lines += [
        "            (-*) ;;",
        '            (*) cmd="$word"; break;;',
        "        esac",
        "    done",
        '    case "$cmd" in',
        '    ("")',
        '        case "$prev" in',
        *_zsh_prev_cases(top, "        "),
        "        esac",
        '        if [[ $cur == -* ]]; then',
        *["    " + line for line in _zsh_described(
            [(f, o.help) for o in top.options for f in o.flags], "option", "opts")],
        "        else",
        *["    " + line for line in _zsh_described(
            [(c.name, c.help) for c in commands], "command", "cmds")],
        "        fi;;",
    ]
    for command in commands:
        lines += [
            f"    ({command.name})",
            '        case "$prev" in',
            *_zsh_prev_cases(command, "        "),
            "        esac",
            '        if [[ $cur == -* ]]; then',
            *["    " + line for line in _zsh_described(
                [(f, o.help) for o in command.options for f in o.flags], "option", "opts")],
            "        else",
            _zsh_values(command, "            "),
            "        fi;;",
        ]
    lines += [
        "    esac",
        "}",
        # Loaded from fpath, the file's body is the function; sourced, it registers it.
        f'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _{name} "$@"; '
        f"else compdef _{name} {name}; fi",
        "",
    ]
    return "\n".join(lines)


# --- fish ---------------------------------------------------------------------------

def _fq(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(name: str, condition: str, option: Option) -> str:
    parts = [f"complete -c {name} -n {_fq(condition)}"]
    for flag in option.flags:
        parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
    if option.choices:
        parts.append(f"-x -a {_fq(' '.join(option.choices))}")
    elif option.paths == "dir":
        parts.append("-x -a '(__fish_complete_directories)'")
    elif option.paths == "file":
        parts.append("-r -F")
    elif option.takes_value:
        parts.append("-x")
    if option.help:
        parts.append(f"-d {_fq(option.help)}")
    return " ".join(parts)


def _fish(top: Command, commands: list[Command]) -> str:
    name = top.name
    lines = [
        f"# fish completion for {name}; generated by `{name} completion fish`.",
        f"# Install: {name} completion fish > ~/.config/fish/completions/{name}.fish",
        f"complete -c {name} -f",
    ]
    for option in top.options:
        lines.append(_fish_option(name, "__fish_use_subcommand", option))
    for command in commands:
        description = f" -d {_fq(command.help)}" if command.help else ""
        lines.append(f"complete -c {name} -n '__fish_use_subcommand' -a {command.name}"
                     f"{description}")
    for command in commands:
        condition = f"__fish_seen_subcommand_from {command.name}"
        for option in command.options:
            lines.append(_fish_option(name, condition, option))
        if command.choices:
            lines.append(f"complete -c {name} -n {_fq(condition)} "
                         f"-a {_fq(' '.join(command.choices))}")
        elif command.paths == "dir":
            lines.append(f"complete -c {name} -n {_fq(condition)} "
                         "-a '(__fish_complete_directories)'")
        elif command.paths == "file":
            lines.append(f"complete -c {name} -n {_fq(condition)} -F")
    return "\n".join(lines) + "\n"
