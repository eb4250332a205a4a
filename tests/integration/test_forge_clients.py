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
from tests.integration.forge_servers import REPOSITORY, TOKEN, FakeForge, fake_forge

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


def test_a_status_already_in_its_state_is_not_an_error(forge: FakeForge,
                                                       tmp_path: Path) -> None:
    """A change retried on the same revision says pending again while its status still is:
    GitLab answers 400 "Cannot transition status via :run from :running", which is no
    failure (the status says what we mean) and must not be logged as one on every retry."""
    api = client(forge, tmp_path)
    api.set_status(SHA, "pending", "reconciler/a/Model/m", "soaking")
    api.set_status(SHA, "pending", "reconciler/a/Model/m", "soaking again")
    api.set_status(SHA, "success", "reconciler/a/Model/m", "healthy")
    assert forge.contexts()["reconciler/a/Model/m"][-1] == "success"


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


def test_a_forge_that_answers_a_byte_at_a_time_is_given_up_on(tmp_path: Path) -> None:
    """Each byte comes well within the read timeout, the whole answer would take ~20 s: the
    timeout bounds the whole request, not each read (else a sink's thread is held for as
    long as the server likes)."""
    with fake_forge("github") as served:
        served.faults = ["drip"] * 4
        with pytest.raises(ForgeUnavailable, match=r"timed out after 0\.5s"):
            client(served, tmp_path, timeout=0.5).set_status(SHA, "pending", "c", "d")
        assert len(served.requests) == 4


def test_an_unreadable_token_file_is_named(tmp_path: Path) -> None:
    with fake_forge("github") as served:
        api = forge_client(ForgeSettings("github", served.url, "acme/fleet",
                                         tmp_path / "missing"))
        with pytest.raises(TokenUnreadable, match=r"cannot read forge\.tokenFile"):
            api.set_status(SHA, "pending", "c", "d")
        assert served.requests == []


# What each forge's "is one open for this branch?" call might answer that is not our pull
# request: one from a fork whose branch has the same name (anyone can open those on a
# public project, with content of their choosing), or one for another branch altogether.
FOREIGN = {
    "github": [{"number": 9, "html_url": "https://github.example/acme/fleet/pull/9",
                "head": {"ref": "reconciler/promote/x", "repo": {"full_name": "mallory/fleet"}},
                "base": {"ref": "main"}}],
    "gitlab": [{"iid": 9, "web_url": "https://gitlab.example/acme/fleet/-/merge_requests/9",
                "source_branch": "reconciler/promote/x", "target_branch": "main",
                "source_project_id": 666, "target_project_id": 7}],
    "gitea": {"number": 9, "html_url": "https://gitea.example/acme/fleet/pulls/9",
              "state": "open", "head": {"ref": "someone-elses-branch",
                                        "repo": {"full_name": REPOSITORY}},
              "base": {"ref": "main"}},
}


def test_a_pull_request_of_a_fork_or_another_branch_is_not_taken_for_ours(
        forge: FakeForge, tmp_path: Path) -> None:
    forge.faults = [(200, FOREIGN[forge.kind])]
    opened = client(forge, tmp_path).open_pull_request("reconciler/promote/x", "main", "t", "b")
    assert opened.created and opened.number != 9
    assert [(p["head"], p["base"]) for p in forge.pulls] == [("reconciler/promote/x", "main")]


@pytest.mark.parametrize("answer", [[], {"number": "nine"}, {"iid": None}, "ok", {}])
def test_an_answer_of_the_wrong_shape_is_a_clear_forge_error(
        forge: FakeForge, tmp_path: Path, answer: object) -> None:
    """A broken or hostile forge's 2xx JSON that is not what the API documents: a
    ForgeUnavailable naming the call, never a KeyError or TypeError from deep inside."""
    nothing_open = (404, {"message": "Not Found"}) if forge.kind == "gitea" else (200, [])
    forge.faults = [nothing_open, (201, answer)]
    with pytest.raises(ForgeUnavailable, match=r"POST .* not the pull request the API"):
        client(forge, tmp_path).open_pull_request("reconciler/promote/x", "main", "t", "b")
    if forge.kind != "gitea":  # its lookup answers one object: any other shape is "none"
        forge.faults = [(200, {"number": 1})]
        with pytest.raises(ForgeUnavailable, match=r"GET .* not the list of pull requests"):
            client(forge, tmp_path).open_pull_request("reconciler/promote/x", "main", "t", "b")


def test_a_token_file_with_more_than_the_token_is_refused_without_showing_it(
        tmp_path: Path) -> None:
    """A second line (a note on when it was rotated) would go into the header: http.client
    refuses it with a ValueError that quotes the whole value, token and all, into the log."""
    with fake_forge("gitlab") as served:
        token_file = tmp_path / "token"
        token_file.write_text(f"{TOKEN}\n# rotated 2026-11-01\n")
        api = forge_client(ForgeSettings("gitlab", served.url, "acme/fleet", token_file))
        with pytest.raises(TokenUnreadable, match="must hold the token alone") as raised:
            api.set_status(SHA, "pending", "c", "d")
        assert TOKEN not in str(raised.value) and served.requests == []


def test_the_forge_is_reached_through_the_proxy_the_environment_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As artifact downloads are (http_proxy, https_proxy, no_proxy, read as urllib does):
    a daemon that can fetch its artifacts through the site's proxy can reach its forge.
    The fake forge plays the proxy: it answers the absolute URL it is asked for."""
    with fake_forge("gitea") as served:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{served.port}")
        monkeypatch.setenv("no_proxy", "")
        monkeypatch.delenv("NO_PROXY", raising=False)
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        api = forge_client(ForgeSettings("gitea", "http://forge.invalid/api/v1", "acme/fleet",
                                         token_file, 2.0), backoff_seconds=0.01)
        api.set_status(SHA, "pending", "c", "d")
        assert served.requests == [("POST", f"http://forge.invalid/api/v1/repos/acme/fleet/"
                                            f"statuses/{SHA}")]
