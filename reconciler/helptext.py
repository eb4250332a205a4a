"""What ``reconciler COMMAND --help`` says beyond the flags: a description and examples.

Kept apart from the parser so that a command's flags and its prose can change without
touching each other; ``describe`` fills in every subcommand the parser has, and a test
checks that none is left without a description and an example. A new command adds one
entry here.
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Help:
    description: str
    examples: tuple[str, ...]


HELP: dict[str, Help] = {
    "validate": Help(
        "Check the desired state without touching the fleet: every document against its "
        "schema, references between documents, strategy modules and their own tests (in "
        "the sandbox), and the roots the settings allow. Errors read file:line:col: message "
        "[rule].\n\nExit 0 valid, 1 invalid, 3 cannot check (e.g. no sandbox here).",
        ("reconciler validate desired-state/          # a folder, e.g. in a pre-commit hook",
         "reconciler validate --repo . --rev HEAD~1   # a revision of a repository",
         "reconciler validate desired-state/ -o json | jq '.errors[].rule'")),
    "plan": Help(
        "What one pass would do now: desired state against the live fleet, with a diff of "
        "every changed file, pending waits (soak, window, budget) and gate costs. Changes "
        "nothing.\n\nExit 0 in sync, 2 changes to make, 1 error.",
        ("reconciler plan",
         "reconciler plan -o json | jq '.actions[] | select(.op != \"noop\")'",
         "NO_COLOR=1 reconciler plan                  # no colour on a terminal")),
    "apply": Help(
        "Run one reconcile pass in the foreground, as the daemon would, and report every "
        "action's result.\n\nExit 0 converged or waiting (soak, window, suspension), 1 "
        "error or blocked.",
        ("reconciler apply --config /etc/reconciler/reconciler.yaml",
         "reconciler apply -o json | jq .result")),
    "run": Help(
        "The daemon: follow the branch and reconcile until SIGTERM, serving /metrics, "
        "/healthz, /readyz, /webhook, /gate and /plan on the settings' listen address."
        "\n\nExit 0 after SIGTERM, 1 when it cannot start or keep going (invalid settings, "
        "a busy port, a lost fleet lock).",
        ("reconciler run --config /etc/reconciler/reconciler.yaml",
         "systemctl start reconciler                  # the packaged unit runs this")),
    "status": Help(
        "Per-object state from the journal: status, applied digest, why an object waits or "
        "is blocked, the last pass, quarantined store objects.\n\nExit 0; 1 without a "
        "journal (nothing applied yet) or with unreadable settings.",
        ("reconciler status",
         "reconciler status -o json | jq '.objects[] | select(.status != \"Ready\")'")),
    "history": Help(
        "The journal, newest last: every action and its phases, optionally of one object."
        "\n\nExit 0; 1 for a name the journal does not know (it lists the known ones).",
        ("reconciler history gepetto --limit 10",
         "reconciler history -o yaml")),
    "gauntlet": Help(
        "Run a model's gate without flipping anything (a pull request's check): play the "
        "declared gauntlet against the declared or given artifact and remember the verdict."
        "\n\nExit 0 passed, 1 rejected, 2 inconclusive, 3 error.",
        ("reconciler gauntlet connect4 --rev pr-head",
         "reconciler gauntlet connect4 --artifact https://models.example/c4-v2.pt",
         "reconciler gauntlet connect4 --daemon reconciler.internal:9464 "
         "--secret-file webhook.secret -o json")),
    "verify": Help(
        "Check that a file, or a bundle directory (its manifest.json), has a sha256 digest, "
        "with progress on a terminal.\n\nExit 0 ok, 1 mismatch or unreadable.",
        ("reconciler verify model.pt --sha256 sha256:9f86d08...",
         "reconciler verify bundle/ --sha256 $(reconciler manifest bundle/)")),
    "manifest": Help(
        "Write manifest.json for a bundle directory (every file's size and sha256) and "
        "print the digest to pin in a Model's artifact.sha256.\n\nExit 0; 1 when DIR is "
        "not a directory.",
        ("reconciler manifest bundle/",
         "reconciler manifest bundle/ -o json")),
    "completion": Help(
        "Print a completion script for bash, zsh or fish, generated from this command's "
        "own parser (subcommands, flags, their choices).\n\nExit 0.",
        ("source <(reconciler completion bash)        # in ~/.bashrc",
         "reconciler completion zsh > \"${fpath[1]}/_reconciler\"",
         "reconciler completion fish > ~/.config/fish/completions/reconciler.fish")),
    "schema": Help(
        "Write the JSON Schemas of every document kind (and document.schema.json, which "
        "dispatches on kind) into a folder of your repository, for editors and CI; "
        "without --output-dir, list them or print one.\n\nExit 0; 1 for an unknown "
        "schema or a folder it cannot write.",
        ("reconciler schema --output-dir schemas/",
         "reconciler schema target > target.schema.json",
         "reconciler schema -o json | jq -r '.[].id'")),
    "suspend": Help(
        "Stop the line: nothing is changed on a suspended target (drift is still observed "
        "and reported) until it is resumed. Recorded in the journal, then a running daemon "
        "is woken through its control socket: a change under way on a suspended target is "
        "ended within a second and left as it is. Without a daemon the suspension holds for "
        "the next start and for apply. --all covers every target, those declared later too."
        "\n\nExit 0; 1 for an unknown target (named; nothing is recorded).",
        ("reconciler suspend edge --reason 'GPU driver upgrade, INC-4711'",
         "reconciler suspend --all --reason 'freeze'")),
    "resume": Help(
        "Lift a suspension: the next pass reconciles the target again and repairs what "
        "drifted meanwhile.\n\nExit 0; 1 for an unknown target, or for one target out of "
        "a --all suspension (resume --all lifts it).",
        ("reconciler resume production", "reconciler resume --all")),
    "reconcile": Help(
        "Ask the running daemon for a pass now instead of at its next interval or webhook "
        "(as flux reconcile does).\n\nExit 0 once asked (without a daemon, the journaled "
        "request waits for its start), 1 if the daemon refuses; with --wait, that pass's "
        "result: 0 converged, changed or waiting, 1 otherwise or without a daemon.",
        ("reconciler reconcile", "reconciler reconcile --wait --timeout 10m")),
    "promote": Help(
        "Verify an artifact, run its model's gate, then commit the new digest on a branch "
        "and open a pull request.\n\nExit 0 proposed, 1 rejected, 2 inconclusive, 3 error.",
        ("reconciler promote connect4 --artifact https://models.example/c4-v3.pt",
         "reconciler promote connect4 --artifact file:///srv/models/c4-v3.pt --dry-run")),
}


TOP_EPILOG = """\
conventions:
  reconciler COMMAND --help      what a command does, its exit codes, examples
  -o json|yaml                   on every command that prints: stable, for scripts
  NO_COLOR=1, --color never      no colour; colour and progress only on a terminal
  source <(reconciler completion bash)   (or zsh, fish): shell completion

examples:
  reconciler validate desired-state/
  reconciler plan
  reconciler status -o yaml"""


def describe(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Give every subcommand its description and examples (a description set where the
    parser was built wins)."""
    for name, parser in commands.choices.items():
        entry = HELP.get(name)
        if entry is None:
            continue
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        # Raw formatting keeps the examples' columns, so the prose is wrapped here.
        parser.description = "\n\n".join(
            textwrap.fill(paragraph, 79)
            for paragraph in (parser.description or entry.description).split("\n\n"))
        if not parser.epilog:
            parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in entry.examples)
