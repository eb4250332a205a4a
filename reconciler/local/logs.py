"""Log files a log check reads on a host: beneath the target's root, or beneath a folder the
settings allow (``analysis.logRoots``), never elsewhere.

The path comes from the repository, which is untrusted: it is resolved beneath a trusted
folder's descriptor with no link followed (``beneath.py``), and only a regular file is
read (a FIFO or a device planted there would block or never end). Reads are bounded per
call; a file that was rotated (another inode) or truncated is read again from its start.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from reconciler.local import beneath
from reconciler.places import LogUnavailable

READ_BYTES_PER_CALL = 4 << 20  # a workload that logs more than this per interval lags
LINE_BYTES = 4096  # longer lines are matched on their first 4 KiB
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC

Opener = Callable[[], int]  # a descriptor of the log file, opened beneath a trusted folder


def opener(path: str, root_anchor: Callable[[str], int], log_roots: Sequence[Path]) -> Opener:
    """How to open ``path``: relative, beneath the target's root (``root_anchor`` opens a
    path there); absolute, beneath the one of ``log_roots`` that contains it."""
    if not path.startswith("/"):
        return lambda: root_anchor(path)
    wanted = os.path.normpath(path)
    for root in log_roots:
        base = os.path.normpath(str(root))
        if wanted.startswith(base.rstrip("/") + "/"):
            relative = wanted[len(base):].lstrip("/")
            return lambda: _open_under(base, relative)
    allowed = ", ".join(str(root) for root in log_roots) or "none are set"
    raise LogUnavailable(f"{path} is not beneath the target's root nor beneath a folder of "
                         f"reconciler.yaml's analysis.logRoots ({allowed})")


def _open_under(base: str, relative: str) -> int:
    folder = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return beneath.open_beneath(folder, relative, _READ)
    finally:
        os.close(folder)


class FileLog:
    """The lines appended to one file since the reader was made."""

    def __init__(self, open_file: Opener, shown: str) -> None:
        self._open = open_file
        self._shown = shown
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        found = self._stat()
        if found is not None:  # absent: the workload creates it; read from its start then
            self._identity, self._offset = found[0], found[1]

    def _stat(self) -> tuple[tuple[int, int], int] | None:
        try:
            descriptor = self._open()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._unavailable(error) from None
        try:
            info = os.fstat(descriptor)
            self._require_regular(info)
            return (info.st_dev, info.st_ino), info.st_size
        finally:
            os.close(descriptor)

    def _require_regular(self, info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise LogUnavailable(f"log {self._shown} is not a regular file")

    def _unavailable(self, error: OSError) -> LogUnavailable:
        if error.errno == errno.ELOOP:
            return LogUnavailable(f"log {self._shown} is a symlink or lies behind one: "
                                  "refused")
        if error.errno == errno.EXDEV:
            return LogUnavailable(f"log {self._shown} leads out of its folder: refused")
        return LogUnavailable(f"cannot read log {self._shown}: {error.strerror}")

    def lines(self) -> list[str]:
        try:
            descriptor = self._open()
        except FileNotFoundError:
            return []  # not written yet (or being rotated): nothing new
        except OSError as error:
            raise self._unavailable(error) from None
        try:
            info = os.fstat(descriptor)
            self._require_regular(info)
            identity = (info.st_dev, info.st_ino)
            if identity != self._identity or info.st_size < self._offset:
                self._identity, self._offset, self._partial = identity, 0, b""
            os.lseek(descriptor, self._offset, os.SEEK_SET)
            chunk = os.read(descriptor, READ_BYTES_PER_CALL)
        except OSError as error:
            raise self._unavailable(error) from None
        finally:
            os.close(descriptor)
        self._offset += len(chunk)
        data = self._partial + chunk
        complete, _, self._partial = data.rpartition(b"\n")
        if len(self._partial) > LINE_BYTES:  # one endless line: count it, keep going
            complete, self._partial = data, b""
        if not complete:
            return []
        return [line[:LINE_BYTES].decode("utf-8", "replace") for line in complete.split(b"\n")]
