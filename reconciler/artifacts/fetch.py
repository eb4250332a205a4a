"""Bringing an artifact into the content-addressed store, proven before it lands there.

Sources: a path in the desired-state folder, ``file://`` (a file or a bundle directory),
``http(s)://`` (a file: streamed, hashed while it downloads, bounded in size and in time
without progress, resumed with a Range request after an interruption). Nothing enters the
store unless its digest is the declared one (``Store.publish`` proves it).
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.digests import (
    CHUNK,
    MANIFEST,
    Progress,
    VerificationFailed,
    verify_bundle,
)
from reconciler.errors import ReconcilerError, StalledError, TransientError
from reconciler.places import ContentStore
from reconciler.redaction import redact_text


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_bytes: int = 64 << 30
    stall_seconds: float = 30.0  # a read that waits longer than this aborts the download


class ArtifactUnavailable(TransientError):
    reason = "ArtifactUnavailable"


class ArtifactMissing(StalledError):
    reason = "ArtifactMissing"


def fetch(uri: str, sha256: str | None, artifact_format: str, store: ContentStore,
          read_repo_file: Callable[[str], bytes], *, limits: FetchLimits = FetchLimits(),
          progress: Progress | None = None) -> Path:
    """The store path of the verified artifact (fetched unless a verified copy is there).
    Without ``sha256`` (a PR check of a new artifact) it lands under its own digest.
    Errors name the URI without its userinfo or query (a token, a presigned signature)."""
    try:
        return _fetch(uri, sha256, artifact_format, store, read_repo_file, limits, progress)
    except (ReconcilerError, VerificationFailed) as error:
        error.args = (redact_text(str(error)),)
        raise


def _fetch(uri: str, sha256: str | None, artifact_format: str, store: ContentStore,
           read_repo_file: Callable[[str], bytes], limits: FetchLimits,
           progress: Progress | None) -> Path:
    if sha256 is not None:
        present = store.verified(sha256)
        if present is not None:
            return present
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if artifact_format == "bundle":
        return _fetch_bundle(uri, sha256, scheme, store, progress)
    name = sha256 or "unpinned-" + hashlib.sha256(uri.encode()).hexdigest()[:16]
    resumable = scheme in ("http", "https")
    part = store.staging(name, resumable=resumable)
    try:
        if not scheme:
            part.write_bytes(read_repo_file(uri))
        elif scheme == "file":
            try:
                shutil.copyfile(urlsplit(uri).path, part)
            except FileNotFoundError:
                raise ArtifactMissing(f"artifact {urlsplit(uri).path} does not exist") from None
        elif scheme in ("http", "https"):
            _download(uri, part, limits, progress)
        else:
            raise ArtifactMissing(f"unsupported artifact URI {uri}")
        actual = _sha256(part)
        if sha256 is not None and actual != sha256:
            raise VerificationFailed(f"sha256 of {uri} is {actual}, the repository declares "
                                     f"{sha256}")
        return store.publish(part, actual, proven=True)
    except ArtifactUnavailable:
        raise  # the part stays: the next try resumes from it
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _fetch_bundle(uri: str, sha256: str | None, scheme: str, store: ContentStore,
                  progress: Progress | None) -> Path:
    if scheme != "file":
        raise ArtifactMissing(f"a bundle is fetched from a file:// directory, not {uri}")
    source = Path(urlsplit(uri).path)
    if not (source / MANIFEST).is_file():
        raise ArtifactMissing(f"bundle directory {source} does not exist or has no {MANIFEST}")
    digest = sha256 or _sha256(source / MANIFEST)
    staging = store.staging(f"{digest}.bundle")
    shutil.copytree(source, staging, symlinks=True)
    verify_bundle(staging, digest, progress=progress)
    return store.publish(staging, digest)


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _download(url: str, part: Path, limits: FetchLimits, progress: Progress | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "reconciler"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=limits.stall_seconds)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the part is complete
            return
        if 400 <= error.code < 500:
            raise ArtifactMissing(f"GET {url} answered {error.code} {error.reason}") from None
        raise ArtifactUnavailable(f"GET {url} answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ArtifactUnavailable(f"GET {url}: {getattr(error, 'reason', error)}") from None
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0  # the server ignored the Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else 0
        if total > limits.max_bytes:
            raise ArtifactMissing(f"{url} is {total} bytes, over the limit of "
                                  f"{limits.max_bytes}")
        done = have
        try:
            with open(part, "ab" if resumed else "wb") as stream:
                while chunk := response.read(CHUNK):
                    done += len(chunk)
                    if done > limits.max_bytes:
                        raise ArtifactMissing(f"{url} exceeds the limit of {limits.max_bytes} "
                                              "bytes")
                    stream.write(chunk)
                    if progress is not None:
                        progress(done, total)
        except (TimeoutError, http.client.IncompleteRead, OSError) as error:
            raise ArtifactUnavailable(f"download of {url} broke off after {done} bytes "
                                      f"({error}); it resumes from there") from None
        if total and done < total:
            raise ArtifactUnavailable(f"download of {url} ended at {done} of {total} bytes; "
                                      "it resumes from there")
