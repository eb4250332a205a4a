#!/usr/bin/env python3
"""Ask the running reconciler for the plan of a pull request's revision and print it as a
Markdown comment (docs/pull-requests.md). Standard library only: CI needs neither the
reconciler installed nor any fleet credential, only the webhook secret that signs the
request (HMAC-SHA256 of the body, as GitHub signs webhooks).

    plan-comment.py --daemon https://reconciler.example:9464 --secret-file secret --rev SHA

Exit codes as ``reconciler plan``: 0 in sync, 2 changes, 1 an error (the comment says it).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MAX_ANSWER_BYTES = 4 << 20
MAX_DIFF_LINES = 60


def ask(daemon: str, secret: bytes, rev: str, timeout: float) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"rev": rev}).encode()
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    url = (daemon if "://" in daemon else "http://" + daemon).rstrip("/") + "/plan"
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as error:
        try:
            answer = json.loads(error.read(MAX_ANSWER_BYTES))
        except ValueError:
            answer = {"reason": f"HTTP{error.code}", "message": error.reason}
        return error.code, answer


def markdown(rev: str, status: int, answer: dict[str, Any]) -> str:
    if status != 200:
        lines = [f"### reconciler plan for `{rev[:12]}`: cannot plan",
                 f"**{answer.get('reason')}**: {answer.get('message')}"]
        lines += [f"- `{e['file']}:{e['line']}:{e['column']}` {e['message']} ({e['rule']})"
                  for e in answer.get("errors", [])]
        return "\n".join(lines) + "\n"
    changes = [a for a in answer["actions"] if a["op"] != "noop"]
    lines = [f"### reconciler plan for `{rev[:12]}`: "
             + ("in sync, nothing to do" if answer["inSync"] else f"{len(changes)} change(s)"),
             "", "| target | object | op | status | why |", "|---|---|---|---|---|"]
    for action in changes:
        lines.append(f"| {action['target']} | {action['kind']}/{action['name']} | "
                     f"{action['op']} | {action['status']} | {action['message'] or ''} |")
    for target in answer["targets"]:
        if target.get("error"):
            lines.append(f"\n:warning: target {target['name']}: {target['error']}")
    for action in changes:
        if action.get("diff"):
            diff = action["diff"].splitlines()
            shown = diff[:MAX_DIFF_LINES] + ([f"... {len(diff) - MAX_DIFF_LINES} more lines"]
                                             if len(diff) > MAX_DIFF_LINES else [])
            lines += ["", f"<details><summary>{action['kind']}/{action['name']} on "
                      f"{action['target']}</summary>", "", "```diff", *shown, "```",
                      "</details>"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemon", required=True, help="the daemon's listen address or URL")
    parser.add_argument("--secret-file", required=True, type=Path)
    parser.add_argument("--rev", required=True, help="the pull request's branch or sha")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    try:
        status, answer = ask(args.daemon, args.secret_file.read_bytes().strip(), args.rev,
                             args.timeout)
    except (OSError, ValueError) as error:
        print(f"### reconciler plan for `{args.rev[:12]}`: the daemon did not answer\n"
              f"{getattr(error, 'reason', error)}")
        return 1
    sys.stdout.write(markdown(args.rev, status, answer))
    if status != 200 or any(t.get("error") for t in answer["targets"]):
        return 1
    return 0 if answer["inSync"] else 2


if __name__ == "__main__":
    sys.exit(main())
