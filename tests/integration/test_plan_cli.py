"""``reconciler plan`` and ``validate`` as real subprocesses on real repositories."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.cache import DesiredCache
from reconciler.desired.loader import cache_salt, load_desired
from reconciler.source.git import GitSource
from reconciler.source.snapshot import Entry
from tests.conftest import Repo, Result, git

Cli = Callable[..., Result]


def settings_file(tmp_path: Path, repo: Repo, extra: str = "") -> Path:
    path = tmp_path / "reconciler.yaml"
    path.write_text(f"repo: {repo.path}\nbranch: main\npath: desired-state\n"
                    f"stateDir: {tmp_path / 'state'}\n{extra}")
    return path


def materialize(plan_json: dict[str, object], state: Path, repo: Repo) -> None:
    """Make the fleet what the plan says it should be (apply is a later issue)."""
    from reconciler.desired.documents import Config
    from reconciler.desired.render import render_config

    snapshot = GitSource(str(repo.path), "main", "desired-state", state / "scratch").fetch()
    desired = load_desired(snapshot.snapshot, DesiredCache(cache_salt()),
                           run_strategy_checks=False)
    for action in plan_json["actions"]:  # type: ignore[attr-defined]
        root = state / "fleet" / action["target"]
        where = action["location"].split(" ", 1)[1]
        if action["kind"] == "Model":
            blob = state / "store" / "sha256" / action["desired"]
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(desired.read_file(desired.models[action["name"]].artifact.uri))
            (root / where).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(blob, root / where)
            continue
        obj = (desired.configs if action["kind"] == "Config" else desired.strategies)[
            action["name"]]
        content = render_config(obj) if isinstance(obj, Config) else desired.read_content(obj)
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_bytes(content)


def test_plan_of_a_fresh_fleet_lists_changes_and_exits_2(cli: Cli, repo: Repo,
                                                        tmp_path: Path) -> None:
    config = settings_file(tmp_path, repo)
    result = cli("plan", "--config", str(config))
    assert result.returncode == 2, result.stderr
    head = git(repo.path, "rev-parse", "HEAD")
    assert f"Plan for main@sha1:{head}" in result.stdout
    assert "+ Strategy gepetto: create file strategies/gepetto.py" in result.stdout
    assert "+++ b/config/gepetto.json" in result.stdout
    assert "* Model connect4-policy: flip symlink models/canonical_connect4.pt" in result.stdout
    assert "then gauntlet connect4-gate" in result.stdout
    assert "waiting (UpstreamNotHealthy): waits until staging is healthy" in result.stdout
    assert "Plan: 6 to create, 0 to update, 2 pointers to flip" in result.stdout
    assert not (tmp_path / "state" / "fleet").exists(), "plan must not touch the fleet"


def test_plan_json_has_the_documented_shape(cli: Cli, repo: Repo, tmp_path: Path) -> None:
    result = cli("plan", "--config", str(settings_file(tmp_path, repo)), "--output", "json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert set(document) == {"formatVersion", "revision", "inSync", "summary", "targets",
                             "actions", "cost"}
    assert set(document["cost"]) == {"budget", "gates", "soaks", "gpuSeconds", "promotions",
                                     "restarts", "longestSeconds"}
    assert document["formatVersion"] == 1 and document["inSync"] is False
    assert document["summary"] == {"create": 6, "update": 0, "flip": 2, "delete": 0, "recall": 0,
                                   "noop": 0, "waiting": 4, "blocked": 0}
    assert [t["name"] for t in document["targets"]] == ["staging", "production"]
    action = document["actions"][0]
    assert set(action) == {"target", "kind", "name", "op", "location", "current", "desired",
                           "steps", "drift", "status", "reason", "message", "notBefore",
                           "diff", "gateCost", "analysis", "wave"}
    assert (action["target"], action["kind"], action["op"]) == ("staging", "Config", "create")
    assert action["diff"].startswith("--- /dev/null")


def test_converged_fleet_is_in_sync_and_drift_shows_a_diff(cli: Cli, repo: Repo,
                                                          tmp_path: Path) -> None:
    config = settings_file(tmp_path, repo)
    first = json.loads(cli("plan", "--config", str(config), "--output", "json").stdout)
    materialize(first, tmp_path / "state", repo)

    in_sync = cli("plan", "--config", str(config))
    assert in_sync.returncode == 0, in_sync.stdout + in_sync.stderr
    assert "In sync: 8 objects unchanged." in in_sync.stdout

    drifted = tmp_path / "state" / "fleet" / "staging" / "config" / "gepetto.json"
    drifted.write_text(drifted.read_text().replace('"max_provider_calls": 10',
                                                   '"max_provider_calls": 99'))
    drift = cli("plan", "--config", str(config))
    assert drift.returncode == 2
    assert "~ Config gepetto-settings: update file config/gepetto.json" in drift.stdout
    assert '-    "max_provider_calls": 99,' in drift.stdout
    assert '+    "max_provider_calls": 10,' in drift.stdout


def test_invalid_commit_exits_1_with_diagnostics_and_touches_nothing(
        cli: Cli, repo: Repo, tmp_path: Path) -> None:
    repo.write("budget.yaml", "apiVersion: reconciler/v1\nkind: Budget\nmetadata: {name: b}\n"
                              "spec: {promotionsPerDay: -1}\n")
    repo.commit("bad budget")
    result = cli("plan", "--config", str(settings_file(tmp_path, repo)))
    assert result.returncode == 1
    assert "desired-state/budget.yaml:4:26: spec.promotionsPerDay: -1 is less than the " \
           "minimum of 0 [minimum]" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "state" / "fleet").exists()


def test_history_rewrite_makes_plan_fail_with_the_reason(cli: Cli, repo: Repo,
                                                         tmp_path: Path) -> None:
    config = settings_file(tmp_path, repo)
    repo.commit("second")
    assert cli("plan", "--config", str(config)).returncode == 2
    git(repo.path, "reset", "-q", "--hard", "HEAD~1")
    repo.commit("rewritten")
    result = cli("plan", "--config", str(config))
    assert result.returncode == 1
    assert "HistoryRewrite: branch 'main' moved from" in result.stderr


@pytest.mark.parametrize(("content", "expected"), [
    ("repo: .\nintervall: 1m\n", "reconciler.yaml:2:1: intervall: unknown field 'intervall'; "
                                  "did you mean 'interval'? [unknown-field]"),
    ("repo: .\ninterval: soon\n", "reconciler.yaml:2:11: interval: 'soon' must be a duration"),
    ("repo: [\n", "reconciler.yaml:2:1:"),
    ("- repo\n", "reconciler.yaml:1:1: settings must be one YAML mapping [settings-shape]"),
    ("repo: .\nsignature: {policy: x509}\n", "[enum]"),
])
def test_bad_settings_are_reported_with_position(cli: Cli, tmp_path: Path, content: str,
                                                 expected: str) -> None:
    (tmp_path / "reconciler.yaml").write_text(content)
    result = cli("plan")
    assert result.returncode == 1
    assert expected in result.stderr


def test_unreadable_settings_and_missing_repository(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "reconciler.yaml").mkdir()
    unreadable = cli("plan")
    assert unreadable.returncode == 1
    assert "reconciler.yaml:1:1: cannot read settings" in unreadable.stderr
    gone = cli("plan", "--config", os.devnull, "--repo", str(tmp_path / "gone"),
               "--state-dir", str(tmp_path / "s"))
    assert gone.returncode == 1 and "SourceUnavailable" in gone.stderr


def test_validate_a_revision_of_a_repository(cli: Cli, repo: Repo, tmp_path: Path) -> None:
    good = git(repo.path, "rev-parse", "HEAD")
    repo.write("budget.yaml", "kind: Budget\n")
    bad = repo.commit("broken")
    base = ("validate", "--config", os.devnull, "--repo", str(repo.path))
    ok = cli(*base, "--rev", good)
    assert ok.returncode == 0 and f"valid at {good}@sha1:{good}" in ok.stdout
    broken = cli(*base, "--rev", bad)
    assert broken.returncode == 1
    assert "desired-state/budget.yaml:1:1: missing apiVersion" in broken.stdout
    assert cli(*base, "--rev", "nope").returncode == 1


class CountingSnapshot:
    """A snapshot that counts reads: the seam that shows what the cache saves."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.reads: list[str] = []

    @property
    def revision(self) -> str:
        return self._inner.revision  # type: ignore[attr-defined, no-any-return]

    @property
    def display_prefix(self) -> str:
        return self._inner.display_prefix  # type: ignore[attr-defined, no-any-return]

    def entries(self) -> dict[str, Entry]:
        return self._inner.entries()  # type: ignore[attr-defined, no-any-return]

    def read(self, entry: Entry) -> bytes:
        self.reads.append(entry.path)
        return self._inner.read(entry)  # type: ignore[attr-defined, no-any-return]

    def copy_to(self, entry: Entry, destination: Path) -> None:
        self.reads.append(entry.path)
        self._inner.copy_to(entry, destination)  # type: ignore[attr-defined]


def test_unchanged_files_are_never_read_or_parsed_twice(repo: Repo, tmp_path: Path) -> None:
    cache_file = tmp_path / "cache.json"
    tracked = GitSource(str(repo.path), "main", "desired-state", tmp_path / "m")

    cold = CountingSnapshot(tracked.fetch().snapshot)
    cache = DesiredCache(cache_salt(), cache_file)
    load_desired(cold, cache)  # type: ignore[arg-type]
    cache.save()
    assert "budget.yaml" in cold.reads and "strategies/gepetto.py" in cold.reads

    repo.write("budget.yaml", (repo.folder / "budget.yaml").read_text().replace(
        "promotionsPerDay: 12", "promotionsPerDay: 13"))
    repo.commit("one file changed")
    warm = CountingSnapshot(tracked.fetch().snapshot)
    desired = load_desired(warm, DesiredCache(cache_salt(), cache_file))  # type: ignore[arg-type]
    assert warm.reads == ["budget.yaml"], "only the changed file is read"
    assert desired.budgets["daemon"].promotions_per_day == 13


def test_signature_policy_from_the_settings_file_refuses_an_unsigned_commit(
        cli: Cli, repo: Repo, tmp_path: Path) -> None:
    (tmp_path / "allowed_signers").write_text("")
    config = settings_file(tmp_path, repo, "signature:\n  policy: ssh\n"
                                           "  allowedSigners: allowed_signers\n")
    result = cli("plan", "--config", str(config))
    assert result.returncode == 1
    assert "SignatureRefused" in result.stderr and "is not signed" in result.stderr
    assert not (tmp_path / "state" / "fleet").exists()


def test_unreadable_webhook_secret_stops_the_daemon_at_start(cli: Cli, repo: Repo,
                                                             tmp_path: Path) -> None:
    config = settings_file(tmp_path, repo, "listen: 127.0.0.1:0\n"
                                           "webhook: {secretFile: missing-secret}\n")
    result = cli("run", "--config", str(config))
    assert result.returncode == 1
    assert "WebhookSecretUnreadable" in result.stderr and "missing-secret" in result.stderr


@pytest.mark.parametrize("secret", [b"", b"\n", b"short-secret-15\n"])
def test_a_webhook_secret_under_16_bytes_stops_the_daemon_at_start(
        cli: Cli, repo: Repo, tmp_path: Path, secret: bytes) -> None:
    """An empty or guessable secret would let anyone trigger passes."""
    (tmp_path / "secret").write_bytes(secret)
    config = settings_file(tmp_path, repo, "listen: 127.0.0.1:0\n"
                                           "webhook: {secretFile: secret}\n")
    result = cli("run", "--config", str(config))
    assert result.returncode == 1
    assert "WebhookSecretTooShort" in result.stderr
    assert f"has {len(secret.strip())} bytes; at least 16" in result.stderr


def test_yaml_configs_render_deterministically_and_plan_shows_them(
        cli: Cli, repo: Repo, tmp_path: Path) -> None:
    text = (repo.folder / "config" / "gepetto.yaml").read_text()
    repo.write("config/gepetto.yaml", text.replace("format: json", "format: yaml").replace(
        "path: config/gepetto.json", "path: config/gepetto.yaml"))
    repo.commit("settings as YAML")
    result = cli("plan", "--config", str(settings_file(tmp_path, repo)))
    assert result.returncode == 2
    assert "+++ b/config/gepetto.yaml" in result.stdout
    assert "+  max_instances_per_chute: 4" in result.stdout
