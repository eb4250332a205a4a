"""Every subcommand explains itself, and the completion scripts work in the real shells."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler import completion
from reconciler.cli import build_parser
from tests.conftest import Result
from tests.fleet import Fleet

# Commands that print nothing a script would parse: the daemon and the scripts themselves.
NOT_PRINTING = {"run", "completion"}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    return dict(completion._subcommands(build_parser()).choices)


def test_every_subcommand_has_a_description_and_an_example() -> None:
    for name, parser in _subcommands().items():
        text = parser.format_help()
        assert parser.description and len(parser.description) > 40, name
        examples = re.split(r"\nexamples?:[ \n]", text, maxsplit=1)[-1].splitlines() \
            if re.search(r"\nexamples?:[ \n]", text) else []
        assert any(f"reconciler {name}" in line for line in examples), name


def test_every_subcommand_help_states_its_exit_codes() -> None:
    """README promises `COMMAND --help` gives the exit codes (they are the contract)."""
    for name, parser in _subcommands().items():
        assert re.search(r"\bExit 0\b", parser.format_help()), name


def test_every_printing_command_takes_output_text_json_yaml() -> None:
    for name, parser in _subcommands().items():
        if name in NOT_PRINTING:
            continue
        [output] = [a for a in parser._actions if "--output" in a.option_strings]
        assert output.option_strings == ["-o", "--output"], name
        assert tuple(output.choices or ()) == ("text", "json", "yaml"), name


def test_help_through_the_real_command(cli: Callable[..., Result]) -> None:
    top = cli("--help")
    assert top.returncode == 0 and "-o json|yaml" in top.stdout
    assert "reconciler completion bash" in top.stdout
    done = cli("verify", "--help")
    assert done.returncode == 0
    assert "examples:\n  reconciler verify model.pt --sha256" in done.stdout
    assert "Exit 0 ok, 1 mismatch" in done.stdout


def _script(cli: Callable[..., Result], shell: str, tmp_path: Path) -> Path:
    done = cli("completion", shell)
    assert done.returncode == 0, done.stderr
    path = tmp_path / f"reconciler.{shell}"
    path.write_text(done.stdout)
    return path


BASH_CASES = [
    ("reconciler pl", ["plan"]),
    ("reconciler --log-level debug pl", ["plan"]),  # a global flag's value is no command
    ("reconciler ", [c for c in _subcommands()]),
    ("reconciler plan --o", ["--output"]),
    ("reconciler plan -o ", ["text", "json", "yaml"]),
    ("reconciler plan --color ", ["auto", "always", "never"]),
    ("reconciler completion ", ["bash", "zsh", "fish"]),
    ("reconciler schema --output-dir sub", ["subdir"]),  # folders only
    ("reconciler verify fil", ["file.bin"]),
    ("reconciler history --limit ", []),  # a free value: nothing to suggest
]


def test_bash_completes_commands_flags_choices_and_paths(cli: Callable[..., Result],
                                                         tmp_path: Path) -> None:
    script = _script(cli, "bash", tmp_path)
    (tmp_path / "subdir").mkdir()
    (tmp_path / "subfile").write_text("")
    (tmp_path / "file.bin").write_text("")
    probe = [f"source {script}"]
    for line, _ in BASH_CASES:
        probe += [f"read -ra COMP_WORDS <<< {line!r}",
                  *(['COMP_WORDS+=("")'] if line.endswith(" ") else []),
                  "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()",
                  "_reconciler; echo \"${COMPREPLY[*]}\""]
    # --flag=value: bash splits at '=' (COMP_WORDBREAKS), so the value is its own word
    probe += ["COMP_WORDS=(reconciler plan --output = j); COMP_CWORD=4; COMPREPLY=()",
              "_reconciler; echo \"${COMPREPLY[*]}\"",
              "complete -p reconciler"]
    done = subprocess.run(["bash", "--norc", "-c", "\n".join(probe)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for (line, expected), got in zip(BASH_CASES, lines, strict=False):
        assert got.split() == expected, line
    assert lines[len(BASH_CASES)] == "json"
    assert lines[-1] == "complete -F _reconciler reconciler"


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes_with_descriptions(cli: Callable[..., Result], tmp_path: Path) -> None:
    script = _script(cli, "zsh", tmp_path)
    # The completion system's builtins, recorded instead of drawn: what the function asks
    # zsh to offer. compinit itself must accept the script from fpath.
    probe = f"""
compadd() {{ print -r -- "compadd ${{(j: :)@}}" }}
_describe() {{ print -r -- "describe $1 ${{(j:|:)${{(P)2}}}}" }}
_files() {{ print -r -- "files $*" }}
compdef() {{ print -r -- "compdef $*" }}
source {script}
words=(reconciler pl); CURRENT=2; _reconciler
words=(reconciler plan -o ''); CURRENT=4; _reconciler
words=(reconciler plan --col); CURRENT=3; _reconciler
words=(reconciler manifest ''); CURRENT=3; _reconciler
words=(reconciler verify ''); CURRENT=3; _reconciler
"""
    done = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "compdef _reconciler reconciler"
    assert lines[1].startswith("describe command validate:check desired state|plan:what a "
                               "pass would do|")
    assert lines[2] == "compadd -- text json yaml"
    assert "|--color:colour a diff|" in lines[3]
    assert lines[4:] == ["files -/", "files "]
    fpath = tmp_path / "fpath"
    fpath.mkdir()
    script.rename(fpath / "_reconciler")
    loaded = subprocess.run(["zsh", "-f", "-c", f"fpath=({fpath} $fpath); autoload -Uz "
                             "compinit; compinit -u -D; print -r -- $_comps[reconciler]"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert loaded.stdout.strip() == "_reconciler", loaded.stderr


# An interactive zsh on a pseudo-terminal (zsh's own zpty), keys typed as a person would:
# compinit loads the script from fpath and the completion system uses it for real.
ZSH_SESSION = r"""zmodload zsh/zpty
zpty -b z 'zsh -f -i'
setup='PS1="> "; fpath=('$1' $fpath); autoload -Uz compinit; compinit -u -D'
# a stand-in that shows what the line ran with; RE""ADY is READY only once run
setup+='; reconciler() { print -r -- "ARGS:$*" }; print RE""ADY'
zpty -w z "$setup"
# Wait (up to a minute, on a loaded machine) for what a step must show.
expect() {
  local seen="" chunk
  local deadline=$(( SECONDS + 60 ))
  while (( SECONDS < deadline )); do
    if zpty -r -t z chunk; then seen+=$chunk; print -rn -- "$chunk"; fi
    [[ $seen == *$~1* ]] && return 0
    sleep 0.05
  done
  print "TIMEOUT waiting for $1"; return 1
}
expect 'READY' || exit 1
zpty -w -n z $'reconciler comp\t'
expect 'completion' || exit 1
zpty -w -n z $'\t'
expect 'bash*fish*zsh' || exit 1
zpty -w -n z $'z\t\n'
expect 'ARGS:completion zsh' || exit 1
zpty -d z
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes_at_a_real_prompt(cli: Callable[..., Result], tmp_path: Path) -> None:
    fpath = tmp_path / "fpath"
    fpath.mkdir()
    _script(cli, "zsh", tmp_path).rename(fpath / "_reconciler")
    session = tmp_path / "session.zsh"
    session.write_text(ZSH_SESSION)
    done = subprocess.run(["zsh", "-f", str(session), str(fpath)], capture_output=True,
                          text=True, timeout=240, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "ARGS:completion zsh" in done.stdout


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_commands_flags_choices_and_paths(cli: Callable[..., Result],
                                                         tmp_path: Path) -> None:
    script = _script(cli, "fish", tmp_path)
    (tmp_path / "bundle").mkdir()

    def complete(line: str) -> list[str]:
        done = subprocess.run(["fish", "--no-config", "-c",
                               f"source {script}; complete -C {line!r}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return [row.split("\t")[0] for row in done.stdout.splitlines()]

    assert complete("reconciler pl") == ["plan"]
    assert sorted(complete("reconciler plan -o ")) == ["json", "text", "yaml"]
    assert complete("reconciler plan --col") == ["--color"]
    assert complete("reconciler gauntlet --re") == ["--repo", "--retry", "--rev"]
    assert sorted(complete("reconciler completion ")) == ["bash", "fish", "zsh"]
    assert complete("reconciler manifest bun") == ["bundle/"]


def test_scripts_follow_the_parser_not_a_hand_written_list() -> None:
    parser = build_parser()
    commands = completion._subcommands(parser)
    extra = commands.add_parser("frobnicate", help="a command added later")
    extra.add_argument("--level", choices=("low", "high"))
    for shell in completion.SHELLS:
        text = completion.script(parser, shell)
        assert all(word in text for word in ("frobnicate", "level", "low", "high")), shell


def test_the_cli_module_itself_runs_the_completion_command() -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler", "completion", "tcsh"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def _examples() -> list[tuple[str, str]]:
    """(command, example line) for every example a help page shows, the top one's too."""
    pages = [("reconciler", build_parser().epilog or ""),
             *((name, parser.epilog or "") for name, parser in _subcommands().items())]
    return [(name, line.strip()) for name, epilog in pages
            for line in re.split(r"examples?:\s*\n?", epilog, maxsplit=1)[-1].splitlines()
            if line.strip().startswith(("reconciler ", "NO_COLOR=1 reconciler "))]


def test_every_help_example_is_a_command_line_the_parser_takes() -> None:
    examples = _examples()
    assert len(examples) > 30
    for name, line in examples:
        command = re.sub(r"\$\([^)]*\)", "sha256:" + "0" * 64, line)  # a shell substitution
        words = shlex.split(re.split(r"\s+(?:\||>|#)\s", command)[0])
        words = words[words.index("reconciler") + 1:]
        try:
            build_parser().parse_args(words)
        except SystemExit:
            raise AssertionError(f"{name}: {line!r} is refused by the parser") from None


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_the_jq_examples_read_keys_the_json_has(cli: Callable[..., Result],
                                                tmp_path: Path) -> None:
    """What the examples pipe into jq runs against the real output: a key renamed in the
    JSON would otherwise leave the help page quietly wrong."""
    fleet = Fleet(tmp_path)
    config = ["--config", str(fleet.settings_file)]
    ran = 0
    for name, line in _examples():
        if "| jq " not in line or name not in ("plan", "apply", "status", "validate",
                                                "schema"):
            continue
        command, program = line.split(" | jq ", 1)
        words = shlex.split(command)[1:]
        done = cli(*words, *(config if name in ("plan", "apply", "status") else ()),
                   cwd=fleet.repo)
        assert done.stdout, (line, done.stderr)
        filtered = subprocess.run(["jq", *shlex.split(program)], input=done.stdout,
                                  capture_output=True, text=True, timeout=30, check=False)
        assert filtered.returncode == 0 and not filtered.stderr, (line, filtered.stderr)
        ran += 1
    assert ran == 5
