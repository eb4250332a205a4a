"""The ``artifacts`` settings: parsed relative to the file, refused with a line when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.artifacts.fetch import FetchLimits
from reconciler.diagnostics import InvalidInput
from reconciler.settings import ArtifactSettings, load_settings


def test_artifact_bounds_come_from_the_settings_and_a_model_may_set_its_own(
        tmp_path: Path) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text("artifacts:\n  fileRoots: [models, /srv/shared]\n  maxBytes: 1000\n"
                      "  timeout: 2m\n  stallTimeout: 5s\n  reserveBytes: 0\n")
    artifacts = load_settings(config, {}).artifacts
    assert artifacts == ArtifactSettings((tmp_path / "models", Path("/srv/shared")), 1000,
                                         120.0, 5.0, 0)
    assert FetchLimits.of(artifacts).max_bytes == 1000
    assert FetchLimits.of(artifacts, 5000).max_bytes == 5000
    defaults = load_settings(None, {}).artifacts
    assert defaults.file_roots == (), "file:// is refused unless roots are named"


def test_a_zero_limit_is_refused_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "reconciler.yaml"
    config.write_text("branch: main\nartifacts:\n  maxBytes: 0\n")
    with pytest.raises(InvalidInput) as refused:
        load_settings(config, {})
    assert refused.value.diagnostics[0].line == 3


def test_a_model_declares_its_own_artifact_limit() -> None:
    from reconciler.desired import schema as schemas
    from reconciler.desired.documents import Origin, build

    model = {"apiVersion": "reconciler/v1", "kind": "Model", "metadata": {"name": "policy"},
             "spec": {"targets": ["edge"], "pointer": {"path": "current.bin"},
                      "artifact": {"uri": "https://models.example/p.pt", "sha256": "ab" * 32,
                                   "maxBytes": 1 << 40}}}
    assert not schemas.schema_violations(schemas.validator("model"), model)
    built = build("Model", model, Origin("model.yaml", "0" * 40, 0, 1))
    assert built.artifact.max_bytes == 1 << 40
    model["spec"]["artifact"]["maxBytes"] = 0  # type: ignore[index]
    assert schemas.schema_violations(schemas.validator("model"), model)
