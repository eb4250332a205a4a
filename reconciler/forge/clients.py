"""Pull requests and commit statuses on GitHub, GitLab and Gitea/Forgejo.

Each client calls only documented endpoints (cited at each call). Opening a pull request is
idempotent: an open one for the same branch is found and returned, never duplicated.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

from reconciler.errors import StalledError
from reconciler.forge.http import ForgeRefused, ForgeUnavailable, JsonClient
from reconciler.settings import ForgeSettings
from reconciler.vocabulary import Reason

__all__ = ["Forge", "ForgeRefused", "ForgeUnavailable", "PullRequest", "StatusState",
           "forge_client"]

StatusState = Literal["pending", "success", "failure", "canceled"]
# GitHub caps a status description at 140 characters; the others accept more.
MAX_DESCRIPTION = 140


@dataclass(frozen=True, slots=True)
class PullRequest:
    number: int
    url: str
    created: bool  # False: one was already open for the branch


class Forge(Protocol):
    name: str

    def open_pull_request(self, head: str, base: str, title: str,
                          body: str) -> PullRequest: ...

    def set_status(self, sha: str, state: StatusState, context: str, description: str,
                   target_url: str | None = None) -> None: ...


class TokenUnreadable(StalledError):
    reason = Reason.AUTHENTICATION_FAILED


def _token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise TokenUnreadable(f"cannot read forge.tokenFile {path}: {error.strerror}") \
            from None
    if not token:
        raise TokenUnreadable(f"forge.tokenFile {path} is empty")
    return token


def _description(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 1] + "…"


class _Client:
    def __init__(self, settings: ForgeSettings, stop: threading.Event | None,
                 backoff_seconds: float | None) -> None:
        self.settings = settings
        self.name = f"{settings.type} at {settings.url}"
        extra = {} if backoff_seconds is None else {"backoff_seconds": backoff_seconds}
        self.http = JsonClient(settings.url, self.name, timeout=settings.timeout_seconds,
                               headers=self._headers, stop=stop, **extra)

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _owner_name(self) -> tuple[str, str]:
        owner, _, name = self.settings.repository.partition("/")
        if not owner or not name or "/" in name:
            raise StalledError(f"forge.repository {self.settings.repository!r} must be "
                               "owner/name", reason="ForgeMisconfigured")
        return quote(owner, safe=""), quote(name, safe="")


class GitHub(_Client):
    """REST API v3: https://docs.github.com/en/rest (also GitHub Enterprise Server)."""

    def _headers(self) -> dict[str, str]:
        # https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api
        return {"Authorization": f"Bearer {_token(self.settings.token_file)}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28"}

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        owner, name = self._owner_name()
        # https://docs.github.com/en/rest/pulls/pulls#list-pull-requests
        # (head filters by "user:ref-name"; the branch lives in the repository itself)
        listed = self.http.request(
            "GET", f"/repos/{owner}/{name}/pulls?state=open&head={owner}:{quote(head, safe='')}"
            f"&base={quote(base, safe='')}").body
        for pull in listed or ():
            if pull.get("head", {}).get("ref") == head:
                return PullRequest(int(pull["number"]), str(pull["html_url"]), False)
        # https://docs.github.com/en/rest/pulls/pulls#create-a-pull-request
        made = self.http.request("POST", f"/repos/{owner}/{name}/pulls",
                                 {"title": title, "head": head, "base": base, "body": body,
                                  "maintainer_can_modify": True}).body
        return PullRequest(int(made["number"]), str(made["html_url"]), True)

    def set_status(self, sha: str, state: StatusState, context: str, description: str,
                   target_url: str | None = None) -> None:
        owner, name = self._owner_name()
        # https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
        # states: error, failure, pending, success (no "canceled": error says "not judged")
        payload: dict[str, Any] = {"state": "error" if state == "canceled" else state,
                                   "context": context, "description": _description(description)}
        if target_url:
            payload["target_url"] = target_url
        self.http.request("POST", f"/repos/{owner}/{name}/statuses/{sha}", payload)


class GitLab(_Client):
    """REST API v4: https://docs.gitlab.com/ee/api/rest/"""

    def _headers(self) -> dict[str, str]:
        # https://docs.gitlab.com/ee/api/rest/authentication.html (personal/project tokens)
        return {"PRIVATE-TOKEN": _token(self.settings.token_file)}

    @property
    def _project(self) -> str:
        # https://docs.gitlab.com/ee/api/rest/#namespaced-paths: a path is URL-encoded
        return quote(self.settings.repository, safe="")

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        # https://docs.gitlab.com/ee/api/merge_requests.html#list-project-merge-requests
        listed = self.http.request(
            "GET", f"/projects/{self._project}/merge_requests?state=opened"
            f"&source_branch={quote(head, safe='')}&target_branch={quote(base, safe='')}").body
        for merge in listed or ():
            if merge.get("source_branch") == head:
                return PullRequest(int(merge["iid"]), str(merge["web_url"]), False)
        # https://docs.gitlab.com/ee/api/merge_requests.html#create-mr
        made = self.http.request("POST", f"/projects/{self._project}/merge_requests",
                                 {"source_branch": head, "target_branch": base,
                                  "title": title, "description": body,
                                  "remove_source_branch": True}).body
        return PullRequest(int(made["iid"]), str(made["web_url"]), True)

    def set_status(self, sha: str, state: StatusState, context: str, description: str,
                   target_url: str | None = None) -> None:
        # https://docs.gitlab.com/ee/api/commits.html#set-the-pipeline-status-of-a-commit
        # states: pending, running, success, failed, canceled; "name" is the context
        payload: dict[str, Any] = {"state": {"pending": "running", "failure": "failed"}.get(
            state, state), "name": context, "description": _description(description)}
        if target_url:
            payload["target_url"] = target_url
        self.http.request("POST", f"/projects/{self._project}/statuses/{sha}", payload)


class Gitea(_Client):
    """Gitea and Forgejo API v1: https://docs.gitea.com/api/1.22/ (Forgejo keeps it)."""

    def _headers(self) -> dict[str, str]:
        # https://docs.gitea.com/development/api-usage#authentication
        return {"Authorization": f"token {_token(self.settings.token_file)}"}

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        owner, name = self._owner_name()
        # GET /repos/{owner}/{repo}/pulls/{base}/{head}: the open pull request of a branch
        # pair (Gitea >= 1.19; https://docs.gitea.com/api/1.22/#tag/repository/operation/repoGetPullRequestByBaseHead)
        try:
            found = self.http.request(
                "GET", f"/repos/{owner}/{name}/pulls/{quote(base, safe='')}/"
                f"{quote(head, safe='')}").body
        except ForgeRefused as error:
            if error.status != 404:
                raise
            found = None
        if found and found.get("state") == "open":
            return PullRequest(int(found["number"]), str(found["html_url"]), False)
        # POST /repos/{owner}/{repo}/pulls
        # (https://docs.gitea.com/api/1.22/#tag/repository/operation/repoCreatePullRequest)
        made = self.http.request("POST", f"/repos/{owner}/{name}/pulls",
                                 {"title": title, "head": head, "base": base,
                                  "body": body}).body
        return PullRequest(int(made["number"]), str(made["html_url"]), True)

    def set_status(self, sha: str, state: StatusState, context: str, description: str,
                   target_url: str | None = None) -> None:
        owner, name = self._owner_name()
        # POST /repos/{owner}/{repo}/statuses/{sha}
        # (https://docs.gitea.com/api/1.22/#tag/repository/operation/repoCreateStatus)
        # states: pending, success, error, failure, warning
        payload: dict[str, Any] = {"state": "warning" if state == "canceled" else state,
                                   "context": context, "description": _description(description)}
        if target_url:
            payload["target_url"] = target_url
        self.http.request("POST", f"/repos/{owner}/{name}/statuses/{sha}", payload)


_CLIENTS: dict[str, type[_Client]] = {"github": GitHub, "gitlab": GitLab, "gitea": Gitea}


def forge_client(settings: ForgeSettings, *, stop: threading.Event | None = None,
                 backoff_seconds: float | None = None) -> Forge:
    client: Forge = _CLIENTS[settings.type](settings, stop, backoff_seconds)  # type: ignore[assignment]
    return client
