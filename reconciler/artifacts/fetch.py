"""Bringing an artifact into the content-addressed store, proven before it lands there.

Sources: a path in the desired-state folder, ``file://`` (a file or a bundle directory),
``http(s)://`` (a file: streamed, hashed, resumed with a Range request after an
interruption). Nothing enters the store unless its digest is the declared one
(``Store.publish`` proves it).

Every transfer is bounded the same way, whatever the scheme, because the URI comes from
the repository (untrusted) and the server may be slow or hostile: a size limit (the Model's
``artifact.maxBytes``, else the settings'), the free space of the store's disk less a
reserve for the journal, an overall deadline, a timeout per read, and the pass's stop
event, looked at between reads (and a silent socket is shut down the moment a stop or the
deadline comes, so SIGTERM never waits for a server). ``file://`` reads only regular files
beneath the settings' ``artifacts.fileRoots``, opened without following a link planted after
the check: no ``/dev/zero``, no FIFO, no secret of the daemon's user, and so no message
naming such a file's digest. A failed transfer removes its partial file, except an HTTP
download that broke off or ran out of time, which the next pass resumes (bounded by the same
limit; the store sweeps ``partial/`` at every start).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

from reconciler.digests import (
    CHUNK,
    MANIFEST,
    Progress,
    VerificationFailed,
    verify_bundle,
)
from reconciler.errors import ReconcilerError, StalledError, TransientError
from reconciler.http_connections import connection_for
from reconciler.places import ContentStore
from reconciler.redaction import redact_text
from reconciler.settings import ArtifactSettings
from reconciler.vocabulary import Reason

MAX_REDIRECTS = 5
MAX_MANIFEST_BYTES = 16 << 20
MAX_BUNDLE_ENTRIES = 100_000
_CUT_OFF_POLL_SECONDS = 0.1
_DEFAULTS = ArtifactSettings()


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """``file_roots``: where ``file://`` may read; ``()`` refuses it, ``None`` allows any
    regular file (only for a gauntlet Job, which fetches what the daemon already checked)."""

    max_bytes: int = _DEFAULTS.max_bytes
    stall_seconds: float = _DEFAULTS.stall_seconds
    deadline_seconds: float = _DEFAULTS.timeout_seconds
    reserve_bytes: int = _DEFAULTS.reserve_bytes
    file_roots: tuple[Path, ...] | None = ()

    @classmethod
    def of(cls, settings: ArtifactSettings, max_bytes: int | None = None) -> FetchLimits:
        """The settings' bounds, with a Model's own ``artifact.maxBytes`` when it has one."""
        return cls(max_bytes or settings.max_bytes, settings.stall_seconds,
                   settings.timeout_seconds, settings.reserve_bytes, settings.file_roots)


class ArtifactUnavailable(TransientError):
    reason = Reason.ARTIFACT_UNAVAILABLE


class DownloadBrokeOff(ArtifactUnavailable):
    """The partial file stays: the next try resumes from it."""


class NoRoomForArtifact(ArtifactUnavailable):
    reason = Reason.HOST_RESOURCES


class FetchInterrupted(ArtifactUnavailable):
    reason = Reason.INTERRUPTED


class ArtifactMissing(StalledError):
    reason = Reason.ARTIFACT_MISSING


def fetch(uri: str, sha256: str | None, artifact_format: str, store: ContentStore,
          read_repo_file: Callable[[str], bytes], *, limits: FetchLimits = FetchLimits(),
          progress: Progress | None = None, stop: threading.Event | None = None) -> Path:
    """The store path of the verified artifact (fetched unless a verified copy is there).
    Without ``sha256`` (a PR check of a new artifact) it lands under its own digest.
    Errors name the URI without its userinfo or query (a token, a presigned signature)."""
    try:
        return _fetch(uri, sha256, artifact_format, store, read_repo_file, limits, progress,
                      stop)
    except (ReconcilerError, VerificationFailed) as error:
        error.args = (redact_text(str(error)),)
        raise


def _fetch(uri: str, sha256: str | None, artifact_format: str, store: ContentStore,
           read_repo_file: Callable[[str], bytes], limits: FetchLimits,
           progress: Progress | None, stop: threading.Event | None) -> Path:
    if sha256 is not None:
        present = store.verified(sha256)
        if present is not None:
            return present
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if scheme not in ("", "file", "http", "https"):
        raise ArtifactMissing(f"unsupported artifact URI scheme {scheme!r}")
    if artifact_format == "bundle":
        return _fetch_bundle(uri, sha256, scheme, store, limits, progress, stop)
    name = sha256 or "unpinned-" + hashlib.sha256(uri.encode()).hexdigest()[:16]
    resumable = scheme in ("http", "https")
    part = store.staging(name, resumable=resumable)
    transfer = _Transfer(_shown(uri), limits, part.parent, stop)
    try:
        if not scheme:
            content = read_repo_file(uri)
            transfer.check(len(content), len(content))
            _write_all(part, content)
        elif scheme == "file":
            source = _open_regular(Path(urlsplit(uri).path), limits.file_roots)
            with open(source, "rb", buffering=0) as stream:
                _copy(stream.read, part, os.fstat(stream.fileno()).st_size, transfer, progress)
        else:
            _download(uri, part, transfer, progress)
        actual = _sha256(part)
        if sha256 is not None and actual != sha256:
            raise VerificationFailed(f"sha256 of {transfer.what} is {actual}, the repository "
                                     f"declares {sha256}")
        return store.publish(part, actual, proven=True)
    except DownloadBrokeOff:
        raise  # the part stays: the next try resumes from it
    except BaseException:
        part.unlink(missing_ok=True)
        raise


class _Transfer:
    """One transfer's bounds: its size limit, the room on the store's disk, its deadline
    and the pass's stop request."""

    def __init__(self, what: str, limits: FetchLimits, folder: Path,
                 stop: threading.Event | None) -> None:
        self.what = what
        self.limits = limits
        self.stop = stop
        self.deadline = time.monotonic() + limits.deadline_seconds
        info = os.statvfs(folder)
        self.room = info.f_bavail * info.f_frsize - limits.reserve_bytes

    def over(self) -> bool:
        """A stop request or the deadline: the transfer must end now."""
        return (self.stop is not None and self.stop.is_set()) or \
            time.monotonic() > self.deadline

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, size: int, written: int) -> None:
        """``size``: bytes of the artifact so far (or announced); ``written``: bytes this
        transfer has put (or will put) on the store's disk."""
        if self.stop is not None and self.stop.is_set():
            raise FetchInterrupted(f"fetching {self.what}: stopped (a stop request)")
        if time.monotonic() > self.deadline:
            raise DownloadBrokeOff(f"fetching {self.what}: gave up after "
                                   f"{self.limits.deadline_seconds:.0f}s (artifacts.timeout) "
                                   f"at {size} bytes")
        if size > self.limits.max_bytes:
            raise ArtifactMissing(f"{self.what} is over the limit of {self.limits.max_bytes} "
                                  "bytes (artifact.maxBytes, else the settings' "
                                  "artifacts.maxBytes)")
        if written > self.room:
            raise NoRoomForArtifact(
                f"fetching {self.what}: {written} bytes would leave less than "
                f"{self.limits.reserve_bytes} bytes free on the state directory's disk "
                f"(room for {max(0, self.room)}; artifacts.reserveBytes)")


def _write_all(part: Path, content: bytes) -> None:
    try:
        part.write_bytes(content)
    except OSError as error:
        _no_room(error)
        raise


def _no_room(error: OSError) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise NoRoomForArtifact(f"the state directory's disk is full: {error}") from None


def _write(stream: BinaryIO, chunk: bytes) -> None:
    """A chunk to the part file; a full disk becomes HostResourcesExhausted."""
    try:
        stream.write(chunk)
    except OSError as error:
        _no_room(error)
        raise


def _copy(read: Callable[[int], bytes | None], part: Path, size: int, transfer: _Transfer,
          progress: Progress | None, *, offset: int = 0) -> None:
    """A local file into ``part``, in chunks, bounded, stop-aware; ``offset``: bytes of
    the same transfer (a bundle's earlier members) already written."""
    transfer.check(offset + size, offset + size)
    done = 0
    with open(part, "wb") as stream:
        while chunk := read(CHUNK):
            done += len(chunk)
            transfer.check(offset + done, offset + done)
            _write(stream, chunk)
            if progress is not None:
                progress(done, size)


def _open_regular(path: Path, roots: tuple[Path, ...] | None,
                  within: Path | None = None) -> int:
    """A descriptor of the regular file ``path`` names, which must lie beneath one of
    ``roots`` (and ``within``, for a bundle's member). Links are resolved once, checked,
    and then the resolved path is opened one component at a time from the root without
    following any link, so a link planted after the check fails the open rather than lead
    elsewhere; FIFOs and devices are refused before they are opened."""
    if not path.is_absolute():
        raise ArtifactMissing(f"file:// artifact {path} is not an absolute path")
    real = Path(os.path.realpath(path))
    base = _root_of(real, roots, path)
    if within is not None and real != within and within not in real.parents:
        raise ArtifactMissing(f"{path} leads out of its bundle")
    relative = real.relative_to(base).parts
    if not relative:
        raise ArtifactMissing(f"{path} is a folder, not a file")
    folder = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for component in relative[:-1]:
            inner = os.open(component, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                            os.O_CLOEXEC, dir_fd=folder)
            os.close(folder)
            folder = inner
        info = os.stat(relative[-1], dir_fd=folder, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactMissing(f"{path} is not a regular file (a folder, a FIFO, a device "
                                  "or a socket): refused")
        descriptor = os.open(relative[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK |
                             os.O_NOCTTY | os.O_CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        raise ArtifactMissing(f"artifact {path} does not exist") from None
    except OSError as error:  # a link or a non-folder where the check saw none
        raise ArtifactMissing(f"artifact {path} cannot be opened safely: "
                              f"{error.strerror or error}") from None
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # replaced since the stat
        os.close(descriptor)
        raise ArtifactMissing(f"{path} is not a regular file: refused")
    return descriptor


def _root_of(real: Path, roots: tuple[Path, ...] | None, shown: Path) -> Path:
    if roots is None:
        return Path("/")
    for root in roots:
        resolved = Path(os.path.realpath(root))
        if real == resolved or resolved in real.parents:
            return resolved
    allowed = ", ".join(str(root) for root in roots) or "none are set"
    raise ArtifactMissing(f"file:// artifacts are read only beneath the settings' "
                          f"artifacts.fileRoots ({allowed}); {shown} is not")


def _fetch_bundle(uri: str, sha256: str | None, scheme: str, store: ContentStore,
                  limits: FetchLimits, progress: Progress | None,
                  stop: threading.Event | None) -> Path:
    if scheme != "file":
        raise ArtifactMissing(f"a bundle is fetched from a file:// directory, not "
                              f"{_shown(uri)}")
    source = Path(urlsplit(uri).path)
    real = Path(os.path.realpath(source))
    _root_of(real, limits.file_roots, source)
    if not real.is_dir():
        raise ArtifactMissing(f"bundle directory {source} does not exist or is not a folder")
    with open(_open_regular(real / MANIFEST, limits.file_roots, real), "rb") as stream:
        manifest = stream.read(MAX_MANIFEST_BYTES + 1)
    if len(manifest) > MAX_MANIFEST_BYTES:
        raise ArtifactMissing(f"{source / MANIFEST} is over {MAX_MANIFEST_BYTES} bytes")
    actual = hashlib.sha256(manifest).hexdigest()
    digest = sha256 or actual
    if actual != digest:
        raise VerificationFailed(f"{source / MANIFEST}: sha256 is {actual}, expected {digest}")
    wanted = _members(manifest, source)
    extra = sorted(_listing(real) - set(wanted) - {MANIFEST})
    if extra:
        raise VerificationFailed(f"bundle does not match its manifest: not listed "
                                 f"{', '.join(extra[:20])}")
    staging = store.staging(f"{digest}.bundle")
    transfer = _Transfer(str(source), limits, staging.parent, stop)
    total = sum(wanted.values())
    try:
        transfer.check(total, total)
        staging.mkdir()
        (staging / MANIFEST).write_bytes(manifest)
        done = 0
        for name, size in sorted(wanted.items()):
            member = staging / name
            member.parent.mkdir(parents=True, exist_ok=True)
            with open(_open_regular(real / name, limits.file_roots, real), "rb",
                      buffering=0) as stream:
                _copy(stream.read, member, size, transfer, None, offset=done)
            done += member.stat().st_size
            if progress is not None:
                progress(done, total)
        verify_bundle(staging, digest)
    except BaseException:
        _remove_tree(staging)
        raise
    return store.publish(staging, digest)


def _members(manifest: bytes, source: Path) -> dict[str, int]:
    """The manifest's files by name and size; names must stay inside the bundle."""
    try:
        files = json.loads(manifest)["files"]
        members = {str(name): int(entry["size"]) for name, entry in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise VerificationFailed(f"{source / MANIFEST} is not a valid manifest: "
                                 f"{error}") from None
    for name, size in members.items():
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or any(p in ("..", ".") for p in parts) \
                or size < 0:
            raise VerificationFailed(f"{source / MANIFEST} lists {name!r}, which is not a "
                                     "file inside the bundle")
    return members


def _listing(root: Path) -> set[str]:
    """Every non-folder entry of the bundle (links included), bounded in count."""
    found: set[str] = set()
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        for name in [*files, *(d for d in subdirs if (here / d).is_symlink())]:
            found.add((here / name).relative_to(root).as_posix())
            if len(found) > MAX_BUNDLE_ENTRIES:
                raise ArtifactMissing(f"bundle {root} has over {MAX_BUNDLE_ENTRIES} entries")
    return found


def _remove_tree(path: Path) -> None:
    for inner in sorted(path.rglob("*"), reverse=True) if path.is_dir() else ():
        with contextlib.suppress(OSError):
            inner.rmdir() if inner.is_dir() and not inner.is_symlink() else inner.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _shown(uri: str) -> str:
    """A URI for messages: no credentials, no query string."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class _CutOff:
    """Shuts the transfer's socket down the moment a stop comes or the deadline passes, so
    a read blocked on a silent server returns at once (its timeout would wait a whole
    stall)."""

    def __init__(self, transfer: _Transfer) -> None:
        self._transfer = transfer
        self._done = threading.Event()
        self.socket: socket.socket | None = None  # kept: the connection forgets it
        self._thread = threading.Thread(target=self._watch, name="fetch-cut-off", daemon=True)

    def __enter__(self) -> _CutOff:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(_CUT_OFF_POLL_SECONDS):
            if self._transfer.over():
                if self.socket is not None:
                    with contextlib.suppress(OSError):
                        self.socket.shutdown(socket.SHUT_RDWR)
                return


def _download(url: str, part: Path, transfer: _Transfer, progress: Progress | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "reconciler", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with _CutOff(transfer) as cut_off:
        response, connection = _get(url, headers, transfer, cut_off)
        with contextlib.closing(connection), response:
            _receive(response, part, have, transfer, progress)


def _get(url: str, headers: dict[str, str], transfer: _Transfer,
         cut_off: _CutOff) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    """The response to GET ``url``, redirects followed (http and https only)."""
    for _ in range(MAX_REDIRECTS + 1):
        transfer.check(0, 0)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ArtifactMissing(f"cannot fetch {_shown(url)}: not an http(s) URL")
        timeout = max(0.1, min(transfer.limits.stall_seconds, transfer.remaining()))
        connection, target = connection_for(url, timeout)
        try:
            connection.connect()  # bounded by the timeout; the cut-off needs the socket
            cut_off.socket = connection.sock
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            transfer.check(0, 0)  # a stop or the deadline cut it off: say so
            raise ArtifactUnavailable(f"GET {_shown(url)}: {error}") from None
        location = response.getheader("Location")
        if response.status in (301, 302, 303, 307, 308) and location:
            connection.close()
            url = urljoin(url, location)
            continue
        if response.status == 416 and "Range" in headers:
            return response, connection  # nothing left to send: the part is complete
        if 400 <= response.status < 500:
            connection.close()
            raise ArtifactMissing(f"GET {_shown(url)} answered {response.status} "
                                  f"{response.reason}")
        if response.status >= 300:
            connection.close()
            raise ArtifactUnavailable(f"GET {_shown(url)} answered {response.status} "
                                      f"{response.reason}")
        return response, connection
    raise ArtifactMissing(f"GET {_shown(url)}: more than {MAX_REDIRECTS} redirects")


def _receive(response: http.client.HTTPResponse, part: Path, have: int,
             transfer: _Transfer, progress: Progress | None) -> None:
    if response.status == 416:
        return
    resumed = bool(have) and response.status == 206
    if not resumed:
        have = 0  # the server ignored the Range: start over
    length = response.getheader("Content-Length")
    total = have + int(length) if length and length.isdigit() else 0
    transfer.check(total, total - have)  # refused before a byte is written
    done = have
    with open(part, "ab" if resumed else "wb") as stream:
        while True:
            transfer.check(done, done - have)
            try:
                chunk = response.read1(CHUNK)  # what has arrived: never waits for a full chunk
            except (OSError, http.client.HTTPException) as error:
                transfer.check(done, done - have)
                raise DownloadBrokeOff(f"download of {transfer.what} broke off after {done} "
                                       f"bytes ({error or type(error).__name__}); it resumes "
                                       "from there") from None
            if not chunk:
                break
            done += len(chunk)
            transfer.check(done, done - have)
            _write(stream, chunk)
            if progress is not None:
                progress(done, total)
    transfer.check(done, done - have)  # an empty read after a cut-off is not an end
    if total and done < total:
        raise DownloadBrokeOff(f"download of {transfer.what} ended at {done} of {total} "
                               "bytes; it resumes from there")
