"""Every bad input is rejected with exit 1, the file, the line and the rule, and nothing
else is touched. Each case mutates a copy of the (valid) example folder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.cli import main
from tests.conftest import example_copy

HEADER = "apiVersion: reconciler/v1\n"


def target_doc(name: str, spec: str = "  local:\n    root: x\n") -> str:
    return f"{HEADER}kind: Target\nmetadata:\n  name: {name}\nspec:\n{spec}"


def write(relative: str, content: str | bytes) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return mutate


def replace(relative: str, old: str, new: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new, 1))
    return mutate


def both(*mutations: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        for mutation in mutations:
            mutation(folder)
    return mutate


def symlink(relative: str, target: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        os.symlink(target, folder / relative)
    return mutate


BOMB = "".join(
    [HEADER, 'kind: Config\nmetadata: {name: bomb}\nspec:\n  targets: [staging]\n',
     '  deliver: {path: bomb.json}\n  data:\n',
     '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'] +
    [f'    {chr(98 + i)}: &{chr(98 + i)} [' + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
     for i in range(8)])

MODEL = "models/connect4.yaml"
KUBE_SPEC = "  kubernetes: {context: prod, namespace: ml}\n"
STRATEGY = "strategies/gepetto.yaml"
CONFIG = "config/gepetto.yaml"


ANALYSIS = "  analysis:\n    - name: errors\n      interval: 1s\n      {check}\n"


def analysis(check: str) -> Callable[[Path], None]:
    """The example strategy with one more analysis check, first in its list (line 28)."""
    return replace(STRATEGY, "    - name: no-tracebacks\n",
                   ANALYSIS.format(check=check).split("\n", 1)[1] + "    - name: no-tracebacks\n")


@dataclass(frozen=True)
class Case:
    mutate: Callable[[Path], None]
    file: str
    line: int
    rule: str
    text: str = ""


CASES = {
    # YAML itself
    "yaml-syntax": Case(write("bad.yaml", f"{HEADER}kind: [Target\nmetadata: {{}}\n"),
                        "bad.yaml", 3, "yaml-syntax"),
    "tab-indentation": Case(write("bad.yaml", f"{HEADER}kind: Target\nmetadata:\n\tname: x\n"),
                            "bad.yaml", 4, "yaml-tab", "indents with spaces"),
    "duplicate-key": Case(write("bad.yaml", target_doc("a") + "  prune: true\n  prune: false\n"),
                          "bad.yaml", 9, "yaml-duplicate-key", "first at line 8"),
    "list-document": Case(write("bad.yaml", "- staging\n- production\n"), "bad.yaml", 1,
                          "document-type", "this one is a list"),
    "scalar-document": Case(write("bad.yaml", "just some text\n"), "bad.yaml", 1,
                            "document-type", "scalar"),
    "empty-file": Case(write("bad.yaml", "# nothing here\n"), "bad.yaml", 1, "empty-file"),
    "alias-bomb": Case(write("bad.yaml", BOMB), "bad.yaml", 13, "yaml-alias-expansion"),
    "deep-nesting": Case(write("bad.yaml", "a: " + "[" * 100_000 + "]" * 100_000 + "\n"),
                         "bad.yaml", 1, "yaml-depth"),
    "fifty-megabytes": Case(write("big.yaml", b"# " + b"x" * (50 << 20) + b"\n"), "big.yaml",
                            1, "file-size"),
    "binary-garbage": Case(write("blob.yaml", bytes(range(256)) * 4), "blob.yaml", 1,
                           "file-encoding", "binary"),
    "invalid-utf8": Case(write("latin.yaml", b"a: caf\xe9\n"), "latin.yaml", 1,
                         "file-encoding", "invalid UTF-8"),
    "python-tag": Case(write("bad.yaml", "a: !!python/object/apply:os.system [touch x]\n"),
                       "bad.yaml", 1, "yaml-scalar", "not allowed"),
    "non-string-key": Case(write("bad.yaml", f"{HEADER}1: x\n"), "bad.yaml", 2,
                           "yaml-key-type"),
    # The envelope and the schemas
    "empty-metadata": Case(write("bad.yaml", f"{HEADER}kind: Target\nmetadata: {{}}\nspec: {{}}\n"),
                           "bad.yaml", 3, "metadata"),
    "unknown-kind": Case(write("bad.yaml", f"{HEADER}kind: Deployment\nmetadata: {{name: x}}\n"),
                         "bad.yaml", 2, "kind", "unknown kind 'Deployment'"),
    "wrong-api-version": Case(replace("budget.yaml", "reconciler/v1", "reconciler/v2"),
                              "budget.yaml", 5, "api-version", "use reconciler/v1"),
    "unknown-field": Case(write("bad.yaml", target_doc("a", "  local: {root: x}\n  after: staging\n"
                                                       "  soke: 30m\n")),
                          "bad.yaml", 8, "unknown-field", "did you mean 'soak'"),
    "missing-required": Case(replace(STRATEGY, "  source: strategies/gepetto.py\n", ""),
                             STRATEGY, 11, "required-field", "'source'"),
    "wrong-type": Case(replace("budget.yaml", "promotionsPerDay: 12", "promotionsPerDay: four"),
                       "budget.yaml", 11, "type", "expected an integer"),
    "sprt-bounds": Case(replace("gauntlets/connect4-gate.yaml", "minScore: 0.85",
                                "minScore: 0.97"), "gauntlets/connect4-gate.yaml", 15,
                        "sprt-bounds", "0 < minScore < minScore + margin < 1"),
    "invalid-name": Case(write("bad.yaml", target_doc("Prod_East")), "bad.yaml", 4, "dns-label"),
    "target-both-kinds": Case(write("bad.yaml", target_doc("a", "  local: {root: x}\n"
                                                           "  kubernetes: {namespace: ns}\n")),
                              "bad.yaml", 6, "target-kind"),
    "sha256-short": Case(replace(MODEL, "sha256: f5129856856f", "sha256: f5129"), MODEL, 15,
                         "sha256", "64 lowercase hex"),
    "sha256-uppercase": Case(replace(MODEL, "sha256: f5129856856f", "sha256: F5129856856F"),
                             MODEL, 15, "sha256"),
    "score-above-one": Case(replace("gauntlets/connect4-gate.yaml", "minScore: 0.85",
                                    "minScore: 1.5"), "gauntlets/connect4-gate.yaml", 15,
                            "score"),
    "bad-duration": Case(replace("targets.yaml", "soak: 30m", "soak: 30 minutes"),
                         "targets.yaml", 22, "duration", "'30 minutes'"),
    "soak-without-after": Case(write("bad.yaml", target_doc("a", "  local: {root: x}\n"
                                                            "  soak: 5m\n")),
                               "bad.yaml", 6, "dependentRequired", "'soak' needs 'after'"),
    "bad-file-mode": Case(replace(STRATEGY, 'mode: "0644"', "mode: 644"), STRATEGY, 19,
                          "file-mode"),
    # Across documents
    "duplicate-kind-name": Case(write("more-targets.yaml", target_doc("staging")),
                                "targets.yaml", 8, "duplicate-name",
                                "already declared in more-targets.yaml"),
    "dangling-target": Case(replace(CONFIG, "targets: [staging, production]",
                                    "targets: [staging, qa]"), CONFIG, 10, "dangling-target",
                            "no Target named 'qa'"),
    "dangling-gauntlet": Case(replace(MODEL, "gauntlet: connect4-gate", "gauntlet: missing"),
                              MODEL, 19, "dangling-gauntlet"),
    "dangling-after": Case(replace("targets.yaml", "after: staging", "after: canary"),
                           "targets.yaml", 21, "dangling-target"),
    "after-cycle": Case(replace("targets.yaml", "    root: staging          # relative: under "
                                "the settings' fleetRoot\n",
                                "    root: staging\n  after: production\n"),
                        "targets.yaml", 12, "after-cycle"),
    # Waves (docs/waves.md): a set with how many of it must be healthy
    "wave-share-over-100": Case(replace("targets.yaml", "after: staging",
                                        "after: {targets: [staging], healthy: 150%}"),
                                "targets.yaml", 21, "wave-share", "at most 100%"),
    "wave-share-zero": Case(replace("targets.yaml", "after: staging",
                                    "after:\n    targets: [staging]\n    healthy: 0%"),
                            "targets.yaml", 23, "wave-share", "more than 0%"),
    "wave-count-too-large": Case(replace("targets.yaml", "after: staging",
                                         "after:\n    targets: [staging]\n    healthy: 3"),
                                 "targets.yaml", 23, "wave-count", "names only 1"),
    "wave-unknown-target": Case(replace("targets.yaml", "after: staging",
                                        "after:\n    targets:\n      - staging\n"
                                        "      - canary"),
                                "targets.yaml", 24, "dangling-target", "no Target named 'canary'"),
    "wave-cycle": Case(replace("targets.yaml", "    root: staging          # relative: under "
                               "the settings' fleetRoot\n",
                               "    root: staging\n  after:\n    targets: [production]\n"
                               "    healthy: 1\n"),
                       "targets.yaml", 13, "after-cycle", "staging -> production -> staging"),
    "wave-healthy-garbage": Case(replace("targets.yaml", "after: staging",
                                         "after:\n    targets: [staging]\n    healthy: most"),
                                 "targets.yaml", 23, "wave-healthy", "a share such as '25%'"),
    "missing-strategy-file": Case(replace(STRATEGY, "source: strategies/gepetto.py",
                                          "source: strategies/nope.py"), STRATEGY, 11,
                                  "file-missing"),
    "dot-dot-path": Case(replace(STRATEGY, "source: strategies/gepetto.py",
                                 "source: ../outside.py"), STRATEGY, 11, "path-escape"),
    "absolute-path": Case(replace(STRATEGY, "source: strategies/gepetto.py",
                                  "source: /etc/passwd"), STRATEGY, 11, "path-absolute"),
    "symlink-out-of-repo": Case(symlink("strategies/escape.py", "../../../../etc/passwd"),
                                "strategies/escape.py", 1, "symlink-escape"),
    "source-through-escaping-link": Case(
        both(symlink("strategies/hosts.py", "/etc/hosts"),
             replace(STRATEGY, "source: strategies/gepetto.py", "source: strategies/hosts.py")),
        STRATEGY, 11, "symlink-escape"),
    "deliver-path-escape": Case(replace(STRATEGY, "path: strategies/gepetto.py",
                                        "path: ../../etc/cron.d/evil"), STRATEGY, 18,
                                "path-escape"),
    "delivery-conflict": Case(replace(CONFIG, "path: config/gepetto.json",
                                      "path: strategies/gepetto.py"), STRATEGY, 18,
                              "delivery-conflict", "already written by Config gepetto-settings"),
    "prune-on-a-local-target": Case(write("bad.yaml", target_doc("a", "  local: {root: x}\n"
                                                                 "  prune: true\n")),
                                    "bad.yaml", 7, "prune-local"),
    "two-targets-on-one-namespace": Case(
        write("kube.yaml", target_doc("k1", KUBE_SPEC) + "---\n" + target_doc("k2", KUBE_SPEC)),
        "kube.yaml", 13, "shared-namespace", "already target 'k1'"),
    "health-command-on-kubernetes": Case(
        write("kube.yaml", target_doc("k1", KUBE_SPEC) + "---\n" + HEADER
              + "kind: Config\nmetadata: {name: k}\nspec:\n  targets: [k1]\n  data: {a: 1}\n"
              "  deliver: {configMap: {name: k, key: k.json}}\n"
              "  restart: {deployment: app}\n  health:\n    command: [curl, app]\n"),
        "kube.yaml", 17, "health-kind", "health check is the Deployment's rollout"),
    "job-for-a-metrics-gauntlet": Case(
        write("gauntlets/metrics.yaml", HEADER + "kind: Gauntlet\nmetadata: {name: m}\nspec:\n"
              "  runIn: job\n  metrics:\n    command: [python3, eval.py]\n"
              "    rules: [{metric: acc, op: '>=', value: 0.5}]\n"),
        "gauntlets/metrics.yaml", 5, "job-match-only", "'job' is for match gauntlets"),
    "unknown-time-zone": Case(replace("targets.yaml", "Europe/Berlin", "Mars/Olympus"),
                              "targets.yaml", 24, "time-zone"),
    "unsupported-artifact-scheme": Case(replace(MODEL, "uri: models/connect4-policy-v2.pt",
                                                "uri: s3://bucket/model.pt"), MODEL, 14,
                                        "artifact-uri"),
    "second-budget": Case(write("budget-2.yaml", f"{HEADER}kind: Budget\nmetadata: {{name: b2}}\n"
                                "spec: {promotionsPerDay: 1}\n"), "budget.yaml", 8,
                          "budget-unique"),
    "config-breaks-its-schema": Case(replace(CONFIG, "max_instances_per_chute: 4",
                                             "max_instances_per_chute: 400"), CONFIG, 21,
                                     "config-schema", "maximum of 64"),
    "config-schema-not-json": Case(write("config/gepetto.schema.json", "{ not json"),
                                   "config/gepetto.schema.json", 1, "config-schema-json"),
    # Analysis checks (the strategy's first check starts on line 28)
    "analysis-regex": Case(analysis("log: {path: run/runner.log, pattern: 'ERROR (', "
                                    "maxCount: 0}"), STRATEGY, 30, "log-pattern",
                           "does not compile"),
    "analysis-two-kinds": Case(analysis("log: {path: a.log, pattern: x, maxCount: 0}\n"
                                        "      command: [/bin/true]"), STRATEGY, 28,
                               "analysis-kind", "one kind of check"),
    "analysis-no-condition": Case(analysis("prometheus: {query: 'up'}"), STRATEGY, 30,
                                  "prometheus-condition"),
    "analysis-baseline-both": Case(analysis("prometheus: {query: up, baseline: {before: true, "
                                            "query: up, maxRatio: 2}}"), STRATEGY, 30,
                                   "baseline"),
    "analysis-unknown-placeholder": Case(analysis("prometheus: {query: 'up{pod=\"{{pod}}\"}', "
                                                  "max: 1}"), STRATEGY, 30,
                                         "analysis-placeholder", "{{pod}}"),
    "analysis-log-path-escape": Case(analysis("log: {path: ../../etc/shadow, pattern: x, "
                                              "maxCount: 0}"), STRATEGY, 30, "path-escape"),
    "analysis-failure-limit-never-reached": Case(analysis(
        "count: 2\n      failureLimit: 2\n      command: [/bin/true]"), STRATEGY, 31,
        "analysis-limits", "could never fail"),
    "analysis-count-without-soak": Case(replace(CONFIG, "  data:\n", ANALYSIS.format(
        check="command: [/bin/true]") + "  data:\n"), CONFIG, 17, "analysis-count"),
    "analysis-command-on-kubernetes": Case(
        write("kube.yaml", target_doc("k1", KUBE_SPEC) + "---\n" + HEADER
              + "kind: Config\nmetadata: {name: k}\nspec:\n  targets: [k1]\n  data: {a: 1}\n"
              "  deliver: {configMap: {name: k, key: k.json}}\n"
              "  restart: {deployment: app}\n  analysis:\n    - name: probe\n"
              "      interval: 1s\n      count: 3\n      command: [curl, app]\n"),
        "kube.yaml", 20, "analysis-kind", "a local target only"),
    "analysis-kube-log-without-deployment": Case(
        write("kube.yaml", target_doc("k1", KUBE_SPEC) + "---\n" + HEADER
              + "kind: Config\nmetadata: {name: k}\nspec:\n  targets: [k1]\n  data: {a: 1}\n"
              "  deliver: {configMap: {name: k, key: k.json}}\n  analysis:\n"
              "    - name: errors\n      interval: 1s\n      count: 3\n"
              "      log: {pattern: ERROR, maxCount: 0}\n"),
        "kube.yaml", 19, "log-path", "reads the new pods of 'restart.deployment'"),
    # Strategies
    "strategy-syntax-error": Case(write("strategies/gepetto.py", "def select_chutes(:\n"),
                                  "strategies/gepetto.py", 1, "strategy-syntax"),
    "strategy-import-raises": Case(write("strategies/gepetto.py",
                                         "import os\nraise RuntimeError('no GPU inventory')\n"),
                                   "strategies/gepetto.py", 2, "strategy-import",
                                   "RuntimeError: no GPU inventory"),
    "strategy-sys-exit": Case(write("strategies/gepetto.py", "import sys\nsys.exit(3)\n"),
                              "strategies/gepetto.py", 2, "strategy-import-exit", "sys.exit(3)"),
    "strategy-os-exit": Case(write("strategies/gepetto.py", "import os\nos._exit(0)\n"),
                             "strategies/gepetto.py", 1, "strategy-import-exit",
                             "ended the process"),
    "strategy-never-returns": Case(
        both(write("strategies/gepetto.py", "import time\nwhile True:\n    time.sleep(1)\n"),
             replace(STRATEGY, "checkTimeout: 60s", "checkTimeout: 2s")),
        "strategies/gepetto.py", 1, "strategy-import-timeout", "within 2s"),
    "strategy-entrypoint-missing": Case(replace(STRATEGY, "entrypoint: select_chutes",
                                                "entrypoint: choose"), STRATEGY, 12,
                                        "strategy-entrypoint", "no callable 'choose'"),
    "strategy-tests-fail": Case(replace("strategies/test_gepetto.py",
                                        "assert decision.instances == 4",
                                        "assert decision.instances == 5"),
                                "strategies/test_gepetto.py", 1, "strategy-tests",
                                "test_instance_cap_holds"),
}


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_rejected_with_file_line_and_rule(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    folder = example_copy(tmp_path)
    case.mutate(folder)
    before = _tree_digest(folder)

    code = main(["validate", str(folder)])

    out = capsys.readouterr().out
    assert code == 1, out
    prefix = f"{folder}/{case.file}:{case.line}:"
    matching = [line for line in out.splitlines()
                if line.startswith(prefix) and line.endswith(f"[{case.rule}]")]
    assert matching, f"expected {prefix}...[{case.rule}] in:\n{out}"
    assert case.text in matching[0]
    assert _tree_digest(folder) == before, "validation must not write into the folder"


def test_all_errors_are_reported_at_once_and_sorted(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = example_copy(tmp_path)
    for case in ("dangling-target", "sha256-short", "config-breaks-its-schema", "wrong-type"):
        CASES[case].mutate(folder)
    assert main(["validate", str(folder)]) == 1
    lines = capsys.readouterr().out.splitlines()
    rules = [line.rsplit("[", 1)[1].rstrip("]") for line in lines[:-1]]
    assert sorted(rules) == sorted(["dangling-target", "sha256", "config-schema", "type"])
    positions = [(path, int(line)) for path, line, *_ in (x.split(":") for x in lines[:-1])]
    assert positions == sorted(positions)
    assert lines[-1] == "4 errors"


def test_the_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import EXAMPLE

    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "valid at dir:" in out and "warning" not in out


def test_a_game_budget_the_sprt_would_outrun_is_a_warning_not_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """At bars of 0.6 and 0.5 (margin 0.05) the SPRT expects about 500 games: a budget
    of 400 would leave many runs near the bar inconclusive. Against random (0.85) 400 is
    enough, and an opponent's own budget overrides the gate's."""
    folder = example_copy(tmp_path)
    gate = "gauntlets/connect4-gate.yaml"
    replace(gate, "games: 1000", "games: 400")(folder)
    replace(gate, "minScore: 0.50\n", "minScore: 0.50\n        games: 2000\n")(folder)

    assert main(["validate", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"{folder}/{gate}:16:9: warning: opponent 'heuristic': a budget of "
                        "400 games is below the 525 the SPRT expects for a model at minScore "
                        "0.6 (margin 0.05, no draws assumed); many runs near the bar would "
                        "end inconclusive [gate-budget]")
    assert len(lines) == 2 and "valid at dir:" in lines[1]
