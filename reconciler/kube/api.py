"""Connections to clusters and one place that turns API failures into typed errors.

A context of the kubeconfig names a cluster; with no context and no kubeconfig, the
in-cluster service account is used (the daemon running as a Deployment). Every call goes
through :meth:`Cluster.call`, which names what it was doing, so that a 403 can say which
verb on which resource the Role lacks, and which sorts faults: 5xx, 429 and timeouts are
transient (the daemon backs off), a 409 is a conflict the caller resolves, a missing
namespace and RBAC refusals are stalled (a person must act).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes import client, config, watch

from reconciler.errors import ReconcilerError, StalledError, TransientError
from reconciler.settings import KubeSettings

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
FIELD_MANAGER = "reconciler"


class Conflict(ReconcilerError):
    """409: the object changed since it was read (a stale resourceVersion) or exists; or a
    server-side apply would change fields other managers own: ``fields`` maps each such
    field (``.data.key``) to its manager."""

    reason = "Conflict"

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or {}


def _field_conflicts(details: dict[str, Any]) -> dict[str, str]:
    """``{field: manager}`` from a 409's ``FieldManagerConflict`` causes, whose message reads
    ``conflict with "helm" using v1`` (or ``conflict with "helm"``)."""
    found = {}
    for cause in details.get("causes") or []:
        if isinstance(cause, dict) and cause.get("reason") == "FieldManagerConflict":
            said = str(cause.get("message", ""))
            manager = said.split('"')[1] if said.count('"') >= 2 else said
            found[str(cause.get("field", ""))] = manager
    return found


class NotFound(ReconcilerError):
    reason = "NotFound"


class Expired(ReconcilerError):
    """410: a watch's resourceVersion is too old; list again."""

    reason = "Expired"


def _status_message(error: client.ApiException) -> tuple[str, dict[str, Any]]:
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        return (error.reason or str(error.status)), {}
    if not isinstance(body, dict):
        return str(body), {}
    return str(body.get("message") or error.reason), body.get("details") or {}


class Cluster:
    """One kubeconfig context (or the in-cluster account) and its typed API clients."""

    def __init__(self, context: str | None, settings: KubeSettings) -> None:
        self.context = context
        self.settings = settings
        self.shown = f"context {context}" if context else "the current context"
        self._api: client.ApiClient | None = None
        self._lock = threading.Lock()

    def api(self) -> client.ApiClient:
        """Built on first use, so a kubeconfig problem is a per-target error, not a crash."""
        with self._lock:
            if self._api is None:
                self._api = self._connect()
            return self._api

    def _connect(self) -> client.ApiClient:
        kubeconfig = self.settings.kubeconfig
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ \
            and not os.environ.get("KUBECONFIG") and self.context is None
        configuration = client.Configuration()
        if in_cluster:
            self.shown = "the in-cluster service account"
        try:
            if in_cluster:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(kubeconfig) if kubeconfig else None, context=self.context,
                    client_configuration=configuration)
        except (config.ConfigException, OSError, ValueError, KeyError) as error:
            raise StalledError(f"cannot load Kubernetes configuration for {self.shown}: "
                               f"{error}", reason="KubeconfigInvalid") from None
        configuration.retries = 0  # our own backoff retries; urllib3's would hide faults
        return client.ApiClient(configuration)

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api())

    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api())

    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api())

    def coordination(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self.api())

    @property
    def timeout(self) -> float:
        return self.settings.request_timeout_seconds

    def call(self, verb: str, resource: str, namespace: str, function: Callable[..., Any],
             *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` with a request timeout; failures become typed.
        The result is the client's model, used as Any: its every field is Optional."""
        try:
            return function(*args, _request_timeout=self.timeout, **kwargs)
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise self._typed(error, verb, resource, namespace) from None

    def watch(self, verb: str, resource: str, namespace: str, function: Callable[..., Any],
              *args: Any, seconds: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The events of a watch that the server ends after ``seconds``; failures typed."""
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            function, *args, timeout_seconds=seconds,
            _request_timeout=seconds + self.timeout, **kwargs)
        try:
            yield from stream
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise self._typed(error, verb, resource, namespace) from None

    def _typed(self, error: Exception, verb: str, resource: str,
               namespace: str) -> ReconcilerError:
        where = f"{resource} in namespace {namespace!r} ({self.shown})"
        if not isinstance(error, client.ApiException):
            return TransientError(f"cannot reach the API to {verb} {where}: "
                                  f"{type(error).__name__}: {error}", reason="ApiUnreachable")
        message, details = _status_message(error)
        status = error.status or 0
        if status == 403:
            return StalledError(
                f"the API refused to {verb} {where}: {message}; grant verb {verb!r} on "
                f"resource {resource!r} in the reconciler's Role", reason="Forbidden")
        if status == 401:
            return StalledError(f"the API did not accept our credentials for {where}: "
                                f"{message}", reason="Unauthorized")
        if status == 404 and (details.get("kind") == "namespaces"
                              or message == f'namespaces "{namespace}" not found'):
            return StalledError(f"namespace {namespace!r} does not exist ({self.shown}); "
                                "create it, or fix the Target's namespace",
                                reason="NamespaceNotFound")
        if status == 404:
            return NotFound(f"{verb} {where}: {message}")
        if status == 409:
            return Conflict(f"{verb} {where}: {message}", _field_conflicts(details))
        if status == 410:
            return Expired(f"{verb} {where}: {message}")
        if status == 429 or status >= 500:
            return TransientError(f"the API failed to {verb} {where}: {status} {message}",
                                  reason="ApiUnavailable")
        return StalledError(f"the API refused to {verb} {where}: {status} {message}",
                            reason="ApiRejected")


class Clusters:
    """One :class:`Cluster` per context, shared by every target and the Lease."""

    def __init__(self, settings: KubeSettings) -> None:
        self.settings = settings
        self._clusters: dict[str | None, Cluster] = {}

    def get(self, context: str | None) -> Cluster:
        if context not in self._clusters:
            self._clusters[context] = Cluster(context, self.settings)
        return self._clusters[context]
