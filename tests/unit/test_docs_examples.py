"""The examples in the README and docs/ are valid: a reader copies them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLE, REPO_ROOT


def test_the_kubernetes_example_validates(tmp_path: Path) -> None:
    text = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    [block] = re.findall(r"## An example.*?```yaml\n(.*?)```", text, re.S)
    folder = tmp_path / "desired-state"
    (folder / "strategies").mkdir(parents=True)
    shutil.copy(EXAMPLE / "strategies" / "gepetto.py", folder / "strategies" / "gepetto.py")
    (folder / "fleet.yaml").write_text(block)
    done = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(folder)],
                          capture_output=True, text=True, cwd=REPO_ROOT, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 targets, 1 strategies, 1 models" in done.stdout


def test_the_example_budget_lets_a_new_user_converge_and_commit_a_dozen_times_an_hour() -> None:
    """The README promises a commit converges within a second: a budget spent by the first
    convergence and a few commits would break that promise for someone trying it."""
    from reconciler.desired.cache import DesiredCache
    from reconciler.desired.loader import cache_salt, load_desired
    from reconciler.source.directory import DirectorySnapshot

    state = load_desired(DirectorySnapshot(EXAMPLE, "desired-state/"),
                         DesiredCache(cache_salt()), run_strategy_checks=False)
    [budget] = state.budgets.values()
    restarting = [(target, obj.name) for obj in [*state.delivered, *state.models.values()]
                  if obj.restart is not None for target in obj.targets]
    first_convergence = len(restarting)
    a_dozen_commits = 12 * max(len(obj.targets) for obj in state.delivered)
    assert budget.restarts_per_hour is not None
    assert first_convergence + a_dozen_commits <= budget.restarts_per_hour
    assert budget.promotions_per_day is not None and budget.promotions_per_day >= 12


def _yaml_blocks() -> list[tuple[str, int, str]]:
    """Every ```yaml block of the README and docs/*.md: (file, line, text)."""
    blocks = []
    for path in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, match.start()) + 2
            blocks.append((str(path.relative_to(REPO_ROOT)), line, match.group(1)))
    return blocks


def test_every_document_and_settings_example_in_the_docs_is_valid() -> None:
    """A reader copies these: a field renamed in a schema must not leave a stale example.
    Documents (a known kind) are checked against their kind's schema, settings (only
    settings keys) against settings.schema.json; elided documents (`spec: {...}`) and other
    YAML (CI and pre-commit files) are not ours to check."""
    import yaml

    from reconciler.desired.schema import KINDS, check_document, schema_violations, validator

    settings_keys = set(validator("settings").schema["properties"])
    checked, problems = 0, []
    for file, line, block in _yaml_blocks():
        for data in yaml.safe_load_all(block):
            if not isinstance(data, dict):
                continue
            if data.get("kind") in KINDS:
                if "..." in (data.get("spec") or {}):
                    continue
                violations = check_document(data)
            elif set(data) <= settings_keys:
                violations = schema_violations(validator("settings"), data)
            else:
                continue
            checked += 1
            problems += [f"{file}:{line}: {v.path}: {v.message}" for v in violations]
    assert not problems, "\n".join(problems)
    assert checked >= 12  # the README's settings, the waves, analysis and Kubernetes examples
