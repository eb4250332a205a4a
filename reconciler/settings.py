"""The daemon's own settings: ``reconciler.yaml`` (schema ``settings.schema.json``) and flags.

Relative paths in the file are relative to the file; in flags, to the working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.desired import schema as schemas
from reconciler.desired.locate import Locator
from reconciler.desired.yamlload import YamlError, load_documents
from reconciler.diagnostics import Diagnostic, InvalidInput
from reconciler.durations import parse_duration
from reconciler.source.credentials import GitCredentials
from reconciler.source.location import is_local_path
from reconciler.source.signatures import SignaturePolicy

DEFAULT_CONFIG_FILE = "reconciler.yaml"
CONFIG_ENVIRONMENT_VARIABLE = "RECONCILER_CONFIG"
# The systemd unit's settings and state (StateDirectory=reconciler): where commands look
# last, so that ``reconciler status`` on the service's host shows the service.
SYSTEM_CONFIG_FILE = Path("/etc/reconciler/reconciler.yaml")
SYSTEM_STATE_DIR = Path("/var/lib/reconciler")
DEFAULT_LISTEN = "127.0.0.1:9464"


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """How to reach clusters: ``kubeconfig`` (else $KUBECONFIG, ~/.kube/config, or the
    in-cluster service account), a timeout per API request, how often rollouts are read,
    whether the daemon watches the ConfigMaps it manages."""

    kubeconfig: Path | None = None
    request_timeout_seconds: float = 30.0
    poll_seconds: float = 2.0
    watch: bool = True  # the daemon watches managed ConfigMaps and heals drift at once


@dataclass(frozen=True, slots=True)
class LeaderElection:
    """A coordination.k8s.io/v1 Lease: one daemon acts, the others stand by."""

    namespace: str
    name: str = "reconciler"
    context: str | None = None
    lease_seconds: float = 15.0


@dataclass(frozen=True, slots=True)
class GauntletJobSettings:
    """Where gauntlets declared with ``runIn: job`` run: a batch/v1 Job per gate."""

    namespace: str
    image: str
    context: str | None = None
    gpus: int = 1
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[dict[str, Any], ...] = ()
    service_account: str | None = None


@dataclass(frozen=True, slots=True)
class ArtifactSettings:
    """Bounds on bringing artifacts into the store, whatever the URI's scheme. A Model's
    ``artifact.maxBytes`` overrides ``max_bytes``; ``file://`` reads only regular files
    beneath ``file_roots`` (none: ``file://`` is refused), so a Model cannot read
    ``/dev/zero``, a FIFO or a secret of the daemon's user."""

    file_roots: tuple[Path, ...] = ()
    max_bytes: int = 64 << 30
    timeout_seconds: float = 3600.0  # one transfer, start to end
    stall_seconds: float = 30.0  # a read that waits longer than this gives up
    reserve_bytes: int = 64 << 20  # free space left for the journal and the logs


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    """The server analysis checks query (``analysis.prometheus``). The token is read from
    its file at each query, so a rotated token is used at once and never kept."""

    url: str
    ca_file: Path | None = None
    bearer_token_file: Path | None = None
    timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """Where analysis checks look: the Prometheus server, and the folders besides a
    target's root whose files a log check may read (repository content names the path, so
    it may never lead elsewhere on the host)."""

    prometheus: PrometheusSettings | None = None
    log_roots: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class SandboxJobSettings:
    """Where repository code runs with ``sandbox: job``: a batch/v1 Job per check step, in
    a namespace of its own (deploy/sandbox.yaml), with these limits. ``start_seconds`` is
    how long a pod may take to be scheduled and start, on top of the check's timeout."""

    namespace: str
    image: str
    context: str | None = None
    cpu: str = "1"
    memory: str = "1Gi"
    start_seconds: float = 120.0


@dataclass(frozen=True, slots=True)
class NotificationReceiver:
    """Where events go (reconciler/notify/): a CloudEvents ``webhook``, a ``slack``
    incoming webhook or an ``alertmanager``. The URL (which may hold a token) and a bearer
    token come from files, so that they never sit in this file, a log or a payload.
    ``events`` and ``targets`` filter (empty: all)."""

    name: str
    type: str
    url: str | None = None
    url_file: Path | None = None
    bearer_token_file: Path | None = None
    events: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    timeout_seconds: float = 10.0  # to connect, and for the whole answer
    max_attempts: int = 5  # retries on 5xx, 429, timeouts and refused connections
    queue_size: int = 100  # a full queue drops its oldest event (counted)
    per_minute: float = 30.0  # the token bucket's rate
    burst: int = 10  # and its size
    source: str = "/reconciler"  # the CloudEvents ``source`` attribute
    labels: tuple[tuple[str, str], ...] = ()  # Alertmanager: added to every alert
    resend_seconds: float = 300.0  # Alertmanager: firing alerts are posted again this often


@dataclass(frozen=True, slots=True)
class ForgeSettings:
    """The forge's REST API (``forge:``): pull requests and commit statuses. The token is
    read from ``token_file`` at each request (a rotated token works without a restart)."""

    type: str  # github | gitlab | gitea
    url: str  # the API's base URL
    repository: str  # owner/name; GitLab: the project's id or full path
    token_file: Path
    timeout_seconds: float = 10.0
    statuses: bool = True


@dataclass(frozen=True, slots=True)
class ProposalSettings:
    """``proposals:``: which failures the daemon proposes to undo in Git, on which branch
    names, by whom."""

    on_rollback: bool = False
    on_rejection: bool = False
    targets: tuple[str, ...] = ()  # empty: every target
    branch_prefix: str = "reconciler/"
    author_name: str = "reconciler"
    author_email: str = "reconciler@localhost"

    def wants(self, target: str) -> bool:
        return not self.targets or target in self.targets


@dataclass(frozen=True, slots=True)
class Settings:
    repo: str | None
    branch: str
    path: str
    state_dir: Path
    fleet_root: Path
    interval_seconds: float
    resync_seconds: float
    listen: str | None
    webhook_secret_file: Path | None
    allow_history_rewrite: bool
    signature: SignaturePolicy | None
    kube: KubeSettings = KubeSettings()
    leader_election: LeaderElection | None = None
    gauntlet_job: GauntletJobSettings | None = None
    run_as: str | None = None  # who local restart and health commands run as
    sandbox: str = "bwrap"  # reconciler.sandbox mode; "none" is the explicit opt-out
    inconclusive: str = "hold"  # an inconclusive gate holds the pointer, or counts as rejected
    sandbox_job: SandboxJobSettings | None = None  # where ``sandbox: job`` runs checks
    # Folders besides fleet_root where local Target roots may lie (local/roots.py).
    allowed_roots: tuple[Path, ...] = ()
    artifacts: ArtifactSettings = ArtifactSettings()
    credentials: GitCredentials | None = None
    notifications: tuple[NotificationReceiver, ...] = ()
    forge: ForgeSettings | None = None
    proposals: ProposalSettings = ProposalSettings()
    analysis: AnalysisSettings = AnalysisSettings()

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def mirror_dir(self) -> Path:
        return self.state_dir / "git"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.db"

    @property
    def store_dir(self) -> Path:
        """The content-addressed artifact store; canonical pointers lead into it."""
        return self.state_dir / "store"


def _default_state_dir(config_file: Path | None) -> Path:
    """$STATE_DIRECTORY (systemd's StateDirectory=, in the service); with the service's
    settings file, the service's state dir (a command run beside the service); else XDG."""
    if "STATE_DIRECTORY" in os.environ:
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if config_file is not None and config_file.resolve() == SYSTEM_CONFIG_FILE.resolve():
        return SYSTEM_STATE_DIR
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "reconciler"


def find_config_file(explicit: str | None) -> Path | None:
    """``--config``, else ``$RECONCILER_CONFIG``, else ``./reconciler.yaml`` if present, else
    the service's ``/etc/reconciler/reconciler.yaml`` if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENVIRONMENT_VARIABLE):
        return Path(os.environ[CONFIG_ENVIRONMENT_VARIABLE])
    default = Path(DEFAULT_CONFIG_FILE)
    if default.exists():
        return default
    return SYSTEM_CONFIG_FILE if SYSTEM_CONFIG_FILE.exists() else None


def _read_file(config_file: Path) -> dict[str, Any]:
    shown = str(config_file)
    try:
        data = config_file.read_bytes()
    except OSError as error:
        raise InvalidInput([Diagnostic(shown, 1, 1, f"cannot read settings: "
                                              f"{error.strerror}", "settings-unreadable")]) \
            from None
    try:
        documents = load_documents(data)
    except YamlError as error:
        raise InvalidInput([Diagnostic(shown, error.line, error.col, error.message,
                                              error.rule)]) from None
    if not documents:
        return {}  # an empty file means every default
    if len(documents) != 1 or not isinstance(documents[0].data, dict):
        raise InvalidInput([Diagnostic(shown, 1, 1, "settings must be one YAML mapping",
                                              "settings-shape")])
    content: dict[str, Any] = documents[0].data
    violations = schemas.schema_violations(schemas.validator("settings"), content)
    if violations:
        locator = Locator(data.decode("utf-8-sig"))
        raise InvalidInput(
            Diagnostic(shown, *locator.locate(0, v.path, at_key=v.at_key), v.message, v.rule)
            for v in violations)
    return content


def load_settings(config_file: Path | None, overrides: dict[str, str | None]) -> Settings:
    """Settings from the file (if any) with flags on top. Bad input: InvalidInput."""
    content: dict[str, Any] = _read_file(config_file) if config_file is not None else {}
    base = config_file.resolve().parent if config_file is not None else Path.cwd()

    def from_file(key: str) -> Path | None:
        value = content.get(key)
        return (base / value) if isinstance(value, str) else None

    def path_setting(key: str) -> Path | None:
        flag = overrides.get(key)
        return Path(flag).resolve() if flag else from_file(key)

    repo = overrides.get("repo") or content.get("repo")
    if repo is not None and not overrides.get("repo") and is_local_path(repo):
        repo = str(base / repo)  # a local path in the file is relative to the file
    state_dir = path_setting("stateDir") or _default_state_dir(config_file)
    signature = content.get("signature")
    policy = None
    if signature is not None:
        policy = SignaturePolicy(
            signature["policy"],
            base / signature["allowedSigners"] if "allowedSigners" in signature else None,
            base / signature["keyring"] if "keyring" in signature else None,
            tuple(signature.get("fingerprints", ())))
    return Settings(
        repo=repo,
        branch=overrides.get("branch") or content.get("branch", "main"),
        path=(overrides.get("path") or content.get("path", "desired-state")).strip("/"),
        state_dir=state_dir,
        fleet_root=path_setting("fleetRoot") or state_dir / "fleet",
        interval_seconds=parse_duration(content.get("interval", "1m")),
        resync_seconds=parse_duration(content.get("resync", "10m")),
        listen=content.get("listen", DEFAULT_LISTEN) or None,
        run_as=content.get("runAs"),
        webhook_secret_file=(base / content["webhook"]["secretFile"]
                             if "webhook" in content else None),
        allow_history_rewrite=bool(content.get("allowHistoryRewrite", False)),
        signature=policy,
        kube=_kube(content.get("kubernetes", {}), base),
        leader_election=_leader_election(content.get("leaderElection")),
        gauntlet_job=_gauntlet_job(content.get("gauntletJob")),
        sandbox=content.get("sandbox", "bwrap"),
        inconclusive=(content.get("gates") or {}).get("inconclusive", "hold"),
        sandbox_job=_sandbox_job(content.get("sandboxJob")),
        allowed_roots=tuple(base / root for root in content.get("allowedRoots", ())),
        artifacts=_artifacts(content.get("artifacts", {}), base),
        credentials=_credentials(content.get("credentials"), base),
        notifications=tuple(_receiver(receiver, base) for receiver
                            in (content.get("notifications") or {}).get("receivers", ())),
        forge=_forge(content.get("forge"), base),
        proposals=_proposals(content.get("proposals", {})),
        analysis=_analysis(content.get("analysis", {}), base),
    )


def _receiver(content: dict[str, Any], base: Path) -> NotificationReceiver:
    default = NotificationReceiver("", "")
    rate = content.get("rateLimit", {})
    return NotificationReceiver(
        content["name"], content["type"], content.get("url"),
        base / content["urlFile"] if "urlFile" in content else None,
        base / content["bearerTokenFile"] if "bearerTokenFile" in content else None,
        tuple(content.get("events", ())), tuple(content.get("targets", ())),
        parse_duration(content["timeout"]) if "timeout" in content
        else default.timeout_seconds,
        int(content.get("maxAttempts", default.max_attempts)),
        int(content.get("queueSize", default.queue_size)),
        float(rate.get("perMinute", default.per_minute)),
        int(rate.get("burst", default.burst)),
        str(content.get("source", default.source)),
        tuple(sorted((content.get("labels") or {}).items())),
        parse_duration(content["resendInterval"]) if "resendInterval" in content
        else default.resend_seconds)


def _analysis(content: dict[str, Any], base: Path) -> AnalysisSettings:
    server = content.get("prometheus")
    prometheus = None
    if server is not None:
        prometheus = PrometheusSettings(
            server["url"], base / server["caFile"] if "caFile" in server else None,
            base / server["bearerTokenFile"] if "bearerTokenFile" in server else None,
            parse_duration(server.get("timeout", "5s")))
    return AnalysisSettings(prometheus, tuple(base / root for root in content.get("logRoots", ())))


def _forge(content: dict[str, Any] | None, base: Path) -> ForgeSettings | None:
    if content is None:
        return None
    return ForgeSettings(content["type"], content["url"].rstrip("/"), content["repository"],
                         base / content["tokenFile"],
                         parse_duration(content.get("timeout", "10s")),
                         bool(content.get("statuses", True)))


def _proposals(content: dict[str, Any]) -> ProposalSettings:
    author = content.get("author", {})
    default = ProposalSettings()
    return ProposalSettings(bool(content.get("onRollback", False)),
                            bool(content.get("onRejection", False)),
                            tuple(content.get("targets", ())),
                            content.get("branchPrefix", default.branch_prefix),
                            author.get("name", default.author_name),
                            author.get("email", default.author_email))


def _credentials(content: dict[str, Any] | None, base: Path) -> GitCredentials | None:
    if content is None:
        return None

    def path(key: str) -> Path | None:
        return base / content[key] if key in content else None

    return GitCredentials(content.get("username"), path("passwordFile"), path("sshKey"),
                          path("sshKeyPassphraseFile"), path("knownHosts"),
                          content.get("hostKey"))


def _kube(content: dict[str, Any], base: Path) -> KubeSettings:
    return KubeSettings(
        base / content["kubeconfig"] if "kubeconfig" in content else None,
        parse_duration(content.get("requestTimeout", "30s")),
        parse_duration(content.get("pollInterval", "2s")),
        bool(content.get("watch", True)))


def _leader_election(content: dict[str, Any] | None) -> LeaderElection | None:
    if content is None:
        return None
    return LeaderElection(content["namespace"], content.get("name", "reconciler"),
                          content.get("context"),
                          parse_duration(content.get("leaseDuration", "15s")))


def _gauntlet_job(content: dict[str, Any] | None) -> GauntletJobSettings | None:
    if content is None:
        return None
    return GauntletJobSettings(
        content["namespace"], content["image"], content.get("context"),
        int(content.get("gpus", 1)), tuple(sorted(content.get("nodeSelector", {}).items())),
        tuple(content.get("tolerations", ())), content.get("serviceAccountName"))


def _artifacts(content: dict[str, Any], base: Path) -> ArtifactSettings:
    default = ArtifactSettings()
    return ArtifactSettings(
        tuple(base / root for root in content.get("fileRoots", ())),
        int(content.get("maxBytes", default.max_bytes)),
        parse_duration(content["timeout"]) if "timeout" in content
        else default.timeout_seconds,
        parse_duration(content["stallTimeout"]) if "stallTimeout" in content
        else default.stall_seconds,
        int(content.get("reserveBytes", default.reserve_bytes)))


def _sandbox_job(content: dict[str, Any] | None) -> SandboxJobSettings | None:
    if content is None:
        return None
    return SandboxJobSettings(
        content["namespace"], content["image"], content.get("context"),
        str(content.get("cpu", "1")), str(content.get("memory", "1Gi")),
        parse_duration(content.get("startTimeout", "2m")))
