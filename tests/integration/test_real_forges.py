"""Opt-in: the forge clients against a real forge. Skipped unless these are set:

    RECONCILER_FORGE_TYPE        github | gitlab | gitea
    RECONCILER_FORGE_URL         the API base (https://api.github.com, .../api/v4, .../api/v1)
    RECONCILER_FORGE_REPOSITORY  owner/name (GitLab: the project's path or id)
    RECONCILER_FORGE_TOKEN_FILE  a file holding a token allowed to write statuses and PRs
    RECONCILER_FORGE_SHA         a commit of that repository to post statuses on
    RECONCILER_FORGE_BRANCH      (optional) a pushed branch to open a pull request for

Run: ``pytest -m forge tests/integration/test_real_forges.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.forge import forge_client
from reconciler.settings import ForgeSettings

pytestmark = [pytest.mark.forge, pytest.mark.skipif(
    not os.environ.get("RECONCILER_FORGE_TOKEN_FILE"),
    reason="no RECONCILER_FORGE_TOKEN_FILE: a real forge is opt-in")]


def settings() -> ForgeSettings:
    return ForgeSettings(os.environ["RECONCILER_FORGE_TYPE"],
                         os.environ["RECONCILER_FORGE_URL"].rstrip("/"),
                         os.environ["RECONCILER_FORGE_REPOSITORY"],
                         Path(os.environ["RECONCILER_FORGE_TOKEN_FILE"]))


def test_a_status_is_posted_pending_then_success() -> None:
    api = forge_client(settings())
    sha = os.environ["RECONCILER_FORGE_SHA"]
    api.set_status(sha, "pending", "reconciler/test/Model/opt-in", "soaking")
    api.set_status(sha, "success", "reconciler/test/Model/opt-in", "healthy and converged")


@pytest.mark.skipif(not os.environ.get("RECONCILER_FORGE_BRANCH"),
                    reason="no RECONCILER_FORGE_BRANCH to open a pull request for")
def test_a_pull_request_is_opened_once() -> None:
    api = forge_client(settings())
    branch = os.environ["RECONCILER_FORGE_BRANCH"]
    first = api.open_pull_request(branch, os.environ.get("RECONCILER_FORGE_BASE", "main"),
                                  "reconciler opt-in test", "opened by the opt-in suite")
    again = api.open_pull_request(branch, os.environ.get("RECONCILER_FORGE_BASE", "main"),
                                  "reconciler opt-in test", "opened by the opt-in suite")
    assert again.number == first.number and not again.created
