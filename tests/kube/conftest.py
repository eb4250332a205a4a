from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.emulator import RunningCluster
from tests.kube.world import KubeWorld


@pytest.fixture
def cluster() -> Iterator[RunningCluster]:
    with RunningCluster() as running:
        yield running


@pytest.fixture
def world(tmp_path: Path, cluster: RunningCluster) -> KubeWorld:
    return KubeWorld(tmp_path, cluster)
