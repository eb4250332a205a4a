"""``forge:`` and ``proposals:`` in reconciler.yaml: defaults, paths relative to the file,
and mistakes reported with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.diagnostics import InvalidInput
from reconciler.settings import ProposalSettings, load_settings


def test_forge_and_proposals_are_read_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text("forge:\n  type: gitlab\n  url: https://gitlab.example/api/v4/\n"
                      "  repository: ml/fleet\n  tokenFile: secrets/token\n  timeout: 3s\n"
                      "proposals:\n  onRollback: true\n  targets: [staging]\n"
                      "  author: {name: Bot, email: bot@example.com}\n")
    settings = load_settings(config, {})
    assert settings.forge is not None
    assert (settings.forge.type, settings.forge.url, settings.forge.token_file,
            settings.forge.timeout_seconds, settings.forge.statuses) == (
        "gitlab", "https://gitlab.example/api/v4", tmp_path / "secrets" / "token", 3.0, True)
    proposals = settings.proposals
    assert (proposals.on_rollback, proposals.on_rejection, proposals.author_name) == (
        True, False, "Bot")
    assert proposals.wants("staging") and not proposals.wants("production")
    assert ProposalSettings().wants("anything")


@pytest.mark.parametrize(("text", "line", "words"), [
    ("listen: ''\nforge:\n  type: bitbucket\n  url: https://x\n  repository: a/b\n"
     "  tokenFile: t\n", 3, "bitbucket"),
    ("forge:\n  type: github\n  url: api.github.com\n  repository: a/b\n  tokenFile: t\n",
     3, "API's base URL"),
    ("forge:\n  type: github\n  url: https://api.github.com\n  repository: a/b\n"
     "  token: ghp_inline\n", 5, "did you mean 'tokenFile'"),
    ("proposals:\n  onRollback: yes please\n", 2, "boolean"),
])
def test_mistakes_are_named_with_file_and_line(tmp_path: Path, text: str, line: int,
                                                words: str) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text(text)
    with pytest.raises(InvalidInput) as raised:
        load_settings(config, {})
    shown = [d.format() for d in raised.value.diagnostics]
    assert any(f"{config}:{line}:" in d and words in d for d in shown), shown
    assert not any("ghp_inline" in d for d in shown), "a value is never echoed"
