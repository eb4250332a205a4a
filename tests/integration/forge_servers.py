"""Forge APIs on 127.0.0.1 for the tests: the documented endpoints reconciler calls, for
GitHub, GitLab and Gitea/Forgejo, recording what they get. ``faults`` makes the next
answers fail (a status code, "hang": accept and never answer, "drip": answer one byte at a
time, or (status, body): answer that instead, as a hostile or broken forge would).

Endpoints (request and answer shapes as documented):
- GitHub REST: GET/POST /repos/{owner}/{repo}/pulls
  (https://docs.github.com/en/rest/pulls/pulls#create-a-pull-request: 201 with ``number``,
  ``html_url``; 422 "A pull request already exists" for a second one on the same head),
  POST /repos/{owner}/{repo}/statuses/{sha}
  (https://docs.github.com/en/rest/commits/statuses#create-a-commit-status).
- GitLab v4: GET/POST /projects/:id/merge_requests
  (https://docs.gitlab.com/ee/api/merge_requests.html#create-mr: 201 with ``iid``,
  ``web_url``; 409 for a second open one), POST /projects/:id/statuses/:sha
  (https://docs.gitlab.com/ee/api/commits.html#set-the-pipeline-status-of-a-commit; 400
  "Cannot transition status via :run from :running" for a second running in a row, as
  gitlab-org/gitlab-foss#25807 and its many reports show).
- Gitea v1: GET /repos/{owner}/{repo}/pulls/{base}/{head}, POST /repos/{owner}/{repo}/pulls,
  POST /repos/{owner}/{repo}/statuses/{sha} (https://docs.gitea.com/api/1.22/).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "forge-SECRET-token-4242"
PREFIX = {"github": "", "gitlab": "/api/v4", "gitea": "/api/v1"}
REPOSITORY = "acme/fleet"


@dataclass
class FakeForge:
    kind: str
    port: int = 0
    pulls: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    faults: list[int | str | tuple[int, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX[self.kind]}"

    def settings(self, tmp_path: Path, *, timeout: str = "2s") -> str:
        """The ``forge:`` block of a reconciler.yaml, with the token in a file."""
        token_file = tmp_path / f"{self.kind}-token"
        token_file.write_text(TOKEN + "\n")
        return (f"forge:\n  type: {self.kind}\n  url: {self.url}\n"
                f"  repository: {REPOSITORY}\n  tokenFile: {token_file}\n"
                f"  timeout: {timeout}\n")

    def contexts(self) -> dict[str, list[str]]:
        """context -> the states posted for it, in order."""
        found: dict[str, list[str]] = {}
        for _, body in self.statuses:
            found.setdefault(body.get("context") or body["name"], []).append(body["state"])
        return found


def _authorized(kind: str, headers: Any) -> bool:
    if kind == "gitlab":
        return bool(headers.get("PRIVATE-TOKEN") == TOKEN)
    expected = f"Bearer {TOKEN}" if kind == "github" else f"token {TOKEN}"
    return bool(headers.get("Authorization") == expected)


def _handler(forge: FakeForge) -> type[BaseHTTPRequestHandler]:
    project = REPOSITORY.replace("/", "%2F")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._serve(json.loads(self.rfile.read(length) or b"null"))

        def _serve(self, body: Any) -> None:
            forge.requests.append((self.command, self.path))
            if forge.faults:
                fault = forge.faults.pop(0)
                if fault == "hang":
                    forge.release.wait(30)
                    return
                if fault == "drip":  # each byte well within a read timeout, never done
                    data = json.dumps({"number": 1, "html_url": "x" * 200}).encode()
                    self.send_response(201)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for byte in data:
                        if forge.release.wait(0.1):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    return
                if isinstance(fault, tuple):
                    self._answer(*fault)
                    return
                assert isinstance(fault, int)
                self._answer(fault, {"message": f"injected {fault}"})
                return
            if not _authorized(forge.kind, self.headers):
                self._answer(401, {"message": "Bad credentials"})
                return
            parts = urlsplit(self.path)
            path = parts.path.removeprefix(PREFIX[forge.kind])
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            route = getattr(self, f"_{forge.kind}")
            route(self.command, path, query, body)

        def _open(self, head: str, base: str) -> dict[str, Any] | None:
            return next((p for p in forge.pulls if p["head"] == head and p["base"] == base
                         and p["state"] == "open"), None)

        def _create(self, head: str, base: str, title: str, url: str) -> dict[str, Any]:
            number = len(forge.pulls) + 1
            pull = {"number": number, "head": head, "base": base, "title": title,
                    "state": "open", "url": f"{url}/{number}"}
            forge.pulls.append(pull)
            return pull

        def _github(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
            if path == f"/repos/{REPOSITORY}/pulls" and method == "GET":
                owner, _, head = query.get("head", ":").partition(":")
                found = self._open(head, query.get("base", "")) \
                    if owner == REPOSITORY.split("/")[0] else None
                self._answer(200, [] if found is None else [
                    {"number": found["number"], "html_url": found["url"],
                     "head": {"ref": found["head"], "repo": {"full_name": REPOSITORY}},
                     "base": {"ref": found["base"]}}])
            elif path == f"/repos/{REPOSITORY}/pulls" and method == "POST":
                if not body.get("title") or not body.get("head") or not body.get("base"):
                    self._answer(422, {"message": "Validation Failed"})
                elif self._open(body["head"], body["base"]) is not None:
                    self._answer(422, {"message": "Validation Failed", "errors": [
                        {"message": f"A pull request already exists for acme:{body['head']}."}]})
                else:
                    pull = self._create(body["head"], body["base"], body["title"],
                                        "https://github.example/acme/fleet/pull")
                    self._answer(201, {"number": pull["number"], "html_url": pull["url"]})
            elif path.startswith(f"/repos/{REPOSITORY}/statuses/") and method == "POST":
                self._status(path.rsplit("/", 1)[1], body,
                             ("error", "failure", "pending", "success"))
            else:
                self._answer(404, {"message": "Not Found"})

        def _gitlab(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
            if path == f"/projects/{project}/merge_requests" and method == "GET":
                found = self._open(query.get("source_branch", ""),
                                   query.get("target_branch", ""))
                self._answer(200, [] if found is None else [
                    {"iid": found["number"], "web_url": found["url"],
                     "source_branch": found["head"], "target_branch": found["base"],
                     "source_project_id": 7, "target_project_id": 7}])
            elif path == f"/projects/{project}/merge_requests" and method == "POST":
                if self._open(body["source_branch"], body["target_branch"]) is not None:
                    self._answer(409, {"message": ["Another open merge request already "
                                                   "exists for this source branch"]})
                else:
                    pull = self._create(body["source_branch"], body["target_branch"],
                                        body["title"],
                                        "https://gitlab.example/acme/fleet/-/merge_requests")
                    self._answer(201, {"iid": pull["number"], "web_url": pull["url"]})
            elif path.startswith(f"/projects/{project}/statuses/") and method == "POST":
                self._status(path.rsplit("/", 1)[1], body,
                             ("pending", "running", "success", "failed", "canceled"))
            else:
                self._answer(404, {"message": "404 Not Found"})

        def _gitea(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
            pulls = f"/repos/{REPOSITORY}/pulls"
            if path.startswith(pulls + "/") and method == "GET":
                base, _, head = path[len(pulls) + 1:].partition("/")
                found = self._open(unquote(head), unquote(base))
                if found is None:
                    self._answer(404, {"message": "pull request does not exist"})
                else:
                    self._answer(200, {"number": found["number"], "html_url": found["url"],
                                       "state": "open",
                                       "head": {"ref": found["head"],
                                                "repo": {"full_name": REPOSITORY}},
                                       "base": {"ref": found["base"]}})
            elif path == pulls and method == "POST":
                if self._open(body["head"], body["base"]) is not None:
                    self._answer(409, {"message": "pull request already exists"})
                else:
                    pull = self._create(body["head"], body["base"], body["title"],
                                        "https://gitea.example/acme/fleet/pulls")
                    self._answer(201, {"number": pull["number"], "html_url": pull["url"]})
            elif path.startswith(f"/repos/{REPOSITORY}/statuses/") and method == "POST":
                self._status(path.rsplit("/", 1)[1], body,
                             ("pending", "success", "error", "failure", "warning"))
            else:
                self._answer(404, {"message": "Not Found"})

        def _status(self, sha: str, body: Any, states: tuple[str, ...]) -> None:
            if len(sha) != 40 or body.get("state") not in states:
                self._answer(422, {"message": f"invalid state {body.get('state')!r}"})
                return
            if forge.kind == "gitlab" and body["state"] in ("pending", "running"):
                # GitLab finds the context's status that is still pending or running and
                # moves it by an event; one that is already in the state has none to take.
                last = next((b["state"] for s, b in reversed(forge.statuses)
                             if s == sha and b["name"] == body["name"]), None)
                if last == body["state"]:
                    event = {"pending": "enqueue", "running": "run"}[last]
                    self._answer(400, {"message": f"Cannot transition status via :{event} "
                                       f"from :{last} (Reason(s): Status cannot transition "
                                       f"via \"{event}\")"})
                    return
            forge.statuses.append((sha, body))
            self._answer(201, {"id": len(forge.statuses), **body})

    return Handler


@contextmanager
def fake_forge(kind: str) -> Iterator[FakeForge]:
    forge = FakeForge(kind)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(forge))
    httpd.daemon_threads = True
    forge.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield forge
    finally:
        forge.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
