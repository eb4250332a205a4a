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
    if not token.isprintable() or any(character.isspace() for character in token):
        # In a header it would be refused with an error quoting the value: token and all.
        raise TokenUnreadable(f"forge.tokenFile {path} holds more than one word or line: it "
                              "must hold the token alone")
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

    def _objects(self, listed: Any, call: str) -> list[dict[str, Any]]:
        """A listing's objects; a forge answering something else is broken or hostile."""
        if listed is None:
            return []
        if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
            raise ForgeUnavailable(f"{self.name}: {call} answered JSON that is not the list "
                                   "of pull requests the API documents")
        return listed

    def _pull(self, answer: Any, number: str, url: str, created: bool,
              call: str) -> PullRequest:
        """The pull request in an answer, checked: a broken or hostile forge's JSON is a
        clear error, never a KeyError from deep inside."""
        if isinstance(answer, dict) and isinstance(answer.get(number), int) \
                and isinstance(answer.get(url), str):
            return PullRequest(answer[number], answer[url], created)
        raise ForgeUnavailable(f"{self.name}: {call} answered JSON that is not the pull "
                               f"request the API documents (no {number!r} and {url!r})")

    def _owner_name(self) -> tuple[str, str]:
        owner, _, name = self.settings.repository.partition("/")
        if not owner or not name or "/" in name:
            raise StalledError(f"forge.repository {self.settings.repository!r} must be "
                               "owner/name", reason="ForgeMisconfigured")
        return quote(owner, safe=""), quote(name, safe="")


def _at(found: dict[str, Any], *keys: str) -> Any:
    """``found[k1][k2]...``, or None where a level is missing or not an object."""
    value: Any = found
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


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
        # (head filters by "user:ref-name"; the branch lives in the repository itself: a
        # fork's pull request from a branch of the same name is someone else's change)
        listed = self.http.request(
            "GET", f"/repos/{owner}/{name}/pulls?state=open&head={owner}:{quote(head, safe='')}"
            f"&base={quote(base, safe='')}").body
        for pull in self._objects(listed, "GET pulls"):
            if _at(pull, "head", "ref") == head and _at(pull, "base", "ref") == base \
                    and str(_at(pull, "head", "repo", "full_name")).lower() \
                    == self.settings.repository.lower():
                return self._pull(pull, "number", "html_url", False, "GET pulls")
        # https://docs.github.com/en/rest/pulls/pulls#create-a-pull-request
        made = self.http.request("POST", f"/repos/{owner}/{name}/pulls",
                                 {"title": title, "head": head, "base": base, "body": body,
                                  "maintainer_can_modify": True}).body
        return self._pull(made, "number", "html_url", True, "POST pulls")

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
        # (it lists merge requests from forks too: a fork's branch of the same name is
        # someone else's change)
        listed = self.http.request(
            "GET", f"/projects/{self._project}/merge_requests?state=opened"
            f"&source_branch={quote(head, safe='')}&target_branch={quote(base, safe='')}").body
        for merge in self._objects(listed, "GET merge_requests"):
            if merge.get("source_branch") == head and merge.get("target_branch") == base \
                    and merge.get("source_project_id") is not None \
                    and merge.get("source_project_id") == merge.get("target_project_id"):
                return self._pull(merge, "iid", "web_url", False, "GET merge_requests")
        # https://docs.gitlab.com/ee/api/merge_requests.html#create-mr
        made = self.http.request("POST", f"/projects/{self._project}/merge_requests",
                                 {"source_branch": head, "target_branch": base,
                                  "title": title, "description": body,
                                  "remove_source_branch": True}).body
        return self._pull(made, "iid", "web_url", True, "POST merge_requests")

    def set_status(self, sha: str, state: StatusState, context: str, description: str,
                   target_url: str | None = None) -> None:
        # https://docs.gitlab.com/ee/api/commits.html#set-the-pipeline-status-of-a-commit
        # states: pending, running, success, failed, canceled; "name" is the context
        payload: dict[str, Any] = {"state": {"pending": "running", "failure": "failed"}.get(
            state, state), "name": context, "description": _description(description)}
        if target_url:
            payload["target_url"] = target_url
        try:
            self.http.request("POST", f"/projects/{self._project}/statuses/{sha}", payload)
        except ForgeRefused as error:
            # A status still running (or pending) cannot be moved to the same state: 400
            # "Cannot transition status via :run from :running"; it already says so.
            if error.status != 400 or "Cannot transition status" not in str(error) \
                    or payload["state"] not in ("running", "pending"):
                raise


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
        # An answer for another branch pair or a fork's branch is not ours.
        if isinstance(found, dict) and found.get("state") == "open" \
                and _at(found, "head", "ref") == head and _at(found, "base", "ref") == base \
                and str(_at(found, "head", "repo", "full_name")).lower() \
                == self.settings.repository.lower():
            return self._pull(found, "number", "html_url", False, "GET pulls")
        # POST /repos/{owner}/{repo}/pulls
        # (https://docs.gitea.com/api/1.22/#tag/repository/operation/repoCreatePullRequest)
        made = self.http.request("POST", f"/repos/{owner}/{name}/pulls",
                                 {"title": title, "head": head, "base": base,
                                  "body": body}).body
        return self._pull(made, "number", "html_url", True, "POST pulls")

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
