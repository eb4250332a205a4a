"""The forge clients against small servers that implement the documented endpoints
(tests/integration/forge_servers.py cites them): pull requests are never duplicated,
statuses map to each forge's states, 5xx is retried, 401/422 are refused clearly, a server
that hangs is given up on, and the token never appears in an error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.forge import Forge, ForgeRefused, ForgeUnavailable, forge_client
from reconciler.forge.clients import TokenUnreadable
from reconciler.settings import ForgeSettings
from tests.integration.forge_servers import TOKEN, FakeForge, fake_forge

SHA = "0123456789abcdef0123456789abcdef01234567"
KINDS = ("github", "gitlab", "gitea")


@pytest.fixture(params=KINDS)
def forge(request: pytest.FixtureRequest) -> Iterator[FakeForge]:
    with fake_forge(request.param) as served:
        yield served


def client(served: FakeForge, tmp_path: Path, *, timeout: float = 2.0,
           token: str = TOKEN) -> Forge:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    return forge_client(ForgeSettings(served.kind, served.url, "acme/fleet", token_file,
                                      timeout), backoff_seconds=0.01)


def test_a_pull_request_is_opened_once_and_found_again(forge: FakeForge,
                                                       tmp_path: Path) -> None:
    api = client(forge, tmp_path)
    first = api.open_pull_request("reconciler/promote/x", "main", "Promote x", "evidence")
    again = api.open_pull_request("reconciler/promote/x", "main", "Promote x", "evidence")
    assert first.created and not again.created
    assert (again.number, again.url) == (first.number, first.url)
    assert [(p["head"], p["base"]) for p in forge.pulls] == [("reconciler/promote/x", "main")]


def test_statuses_map_to_each_forges_states_one_context_each(forge: FakeForge,
                                                             tmp_path: Path) -> None:
    api = client(forge, tmp_path)
    for state in ("pending", "success", "failure", "canceled"):
        api.set_status(SHA, state, f"reconciler/staging/Model/{state}", "x" * 500)
    posted = {context.rsplit("/", 1)[1]: states[0]
              for context, states in forge.contexts().items()}
    expected = {"github": {"pending": "pending", "success": "success", "failure": "failure",
                           "canceled": "error"},
                "gitlab": {"pending": "running", "success": "success", "failure": "failed",
                           "canceled": "canceled"},
                "gitea": {"pending": "pending", "success": "success", "failure": "failure",
                          "canceled": "warning"}}[forge.kind]
    assert posted == expected
    assert all(len(body["description"]) <= 140 for _, body in forge.statuses)
    assert {sha for sha, _ in forge.statuses} == {SHA}


def test_5xx_is_retried_with_backoff(forge: FakeForge, tmp_path: Path) -> None:
    forge.faults = [500, 502]
    client(forge, tmp_path).set_status(SHA, "success", "reconciler/a/Model/m", "ok")
    assert len(forge.statuses) == 1 and len(forge.requests) == 3


def test_a_forge_that_keeps_failing_is_unavailable_after_the_retries(
        forge: FakeForge, tmp_path: Path) -> None:
    forge.faults = [500] * 10
    with pytest.raises(ForgeUnavailable, match="answered 500") as raised:
        client(forge, tmp_path).set_status(SHA, "success", "reconciler/a/Model/m", "ok")
    assert "after 4 attempts" in str(raised.value) and TOKEN not in str(raised.value)


def test_a_refused_token_is_stalled_with_a_hint_and_never_shown(forge: FakeForge,
                                                               tmp_path: Path) -> None:
    with pytest.raises(ForgeRefused) as raised:
        client(forge, tmp_path, token="wrong-token-value").open_pull_request(
            "b", "main", "t", "body")
    message = str(raised.value)
    assert raised.value.status == 401 and "forge.tokenFile was refused" in message
    assert "wrong-token-value" not in message and len(forge.requests) == 1, "401 not retried"


def test_a_422_says_what_the_forge_said(tmp_path: Path) -> None:
    with fake_forge("github") as served:
        served.faults = [422]
        with pytest.raises(ForgeRefused, match=r"422 .*invalid\): injected 422"):
            client(served, tmp_path).set_status(SHA, "pending", "c", "d")


def test_a_forge_that_hangs_is_given_up_on(tmp_path: Path) -> None:
    with fake_forge("gitea") as served:
        served.faults = ["hang"] * 4
        with pytest.raises(ForgeUnavailable, match=r"timed out after 0\.2s"):
            client(served, tmp_path, timeout=0.2).set_status(SHA, "pending", "c", "d")
        assert len(served.requests) == 4


def test_an_unreadable_token_file_is_named(tmp_path: Path) -> None:
    with fake_forge("github") as served:
        api = forge_client(ForgeSettings("github", served.url, "acme/fleet",
                                         tmp_path / "missing"))
        with pytest.raises(TokenUnreadable, match=r"cannot read forge\.tokenFile"):
            api.set_status(SHA, "pending", "c", "d")
        assert served.requests == []
