"""Opening paths beneath a target root without following a single link.

A root belongs to the daemon, but what lies in it does not: workloads run there and may
replace a delivered folder or file by a symlink (to a secret, to the store, to /etc). So
every read and write under a root starts from a descriptor of a trusted folder and resolves
the rest with no symlink at all:

- ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` (Linux 5.6+, through ``syscall``), or
- where the kernel or a seccomp filter lacks it, a walk that opens one component at a time
  with ``O_NOFOLLOW`` from the descriptor of the folder before it.

Both refuse ``..`` (EXDEV) and every symlink, on the way or at the end (ELOOP). A link
where a file or folder is expected is never read: observing reports it, delivering replaces
it (see ``folder``). ``RECONCILER_RESOLVE_WALK=1`` forces the walk (kernels whose openat2
misbehaves; the tests run both).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat

RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
SYS_OPENAT2 = 437  # the same number on every architecture (the unified syscall table)
AT_FDCWD = -100
FORCE_WALK_VARIABLE = "RECONCILER_RESOLVE_WALK"
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_ATTEMPTS = 3  # a workload racing us with fresh links gets an error, not an endless loop


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


_NUMBER = ctypes.c_long(SYS_OPENAT2)
_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))
_hows: dict[tuple[int, int], _OpenHow] = {}  # observing opens ~1,000 files a pass: reuse


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    key = (flags, mode if flags & os.O_CREAT else 0)
    how = _hows.get(key)
    if how is None:
        how = _hows[key] = _OpenHow(flags | os.O_CLOEXEC, key[1],
                                    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
    encoded = os.fsencode(path or ".")
    for _ in range(_ATTEMPTS):
        fd = _libc.syscall(_NUMBER, ctypes.c_int(dir_fd), ctypes.c_char_p(encoded),
                           ctypes.byref(how), _HOW_SIZE)
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code not in (errno.EAGAIN, errno.EINTR):  # EAGAIN: a rename raced the lookup
            break
    raise OSError(code, os.strerror(code), path)


@functools.cache
def uses_openat2() -> bool:
    """Whether this kernel (and any seccomp filter around us) lets openat2 through."""
    if os.environ.get(FORCE_WALK_VARIABLE):
        return False
    try:
        os.close(_openat2(AT_FDCWD, ".", _FOLDER, 0))
    except OSError:
        return False
    return True


def parts_of(path: str) -> list[str]:
    """The components of a relative path; EXDEV for anything that could leave the root."""
    if path.startswith("/"):
        raise OSError(errno.EXDEV, "an absolute path leads out of the root", path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EXDEV, "'..' leads out of the root", path)
    return parts


def open_beneath(dir_fd: int, path: str, flags: int, mode: int = 0o600) -> int:
    """A descriptor for ``path`` beneath the folder ``dir_fd``, no link followed: ELOOP
    for a symlink anywhere on the way, EXDEV for a path that leaves the folder."""
    if uses_openat2():
        if path.startswith("/") or ".." in path:
            path = "/".join(parts_of(path))  # EXDEV for a real escape, before the kernel
        return _openat2(dir_fd, path, flags, mode)
    return _walk(dir_fd, parts_of(path), flags, mode)


def _walk(dir_fd: int, parts: list[str], flags: int, mode: int) -> int:
    if not parts:
        return os.open(".", flags, mode, dir_fd=dir_fd)
    current = dir_fd
    try:
        for part in parts[:-1]:
            step = _open_one(current, part)
            if current != dir_fd:
                os.close(current)
            current = step
        return _open_one(current, parts[-1], flags, mode)
    finally:
        if current != dir_fd:
            os.close(current)


def _open_one(parent: int, part: str, flags: int = _FOLDER, mode: int = 0) -> int:
    """One step of the walk. ``O_DIRECTORY | O_NOFOLLOW`` says ENOTDIR for a link; it is
    ELOOP here, as openat2 says, so callers tell a link from a file the same either way."""
    try:
        return os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
    except NotADirectoryError:
        if stat.S_ISLNK(os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part) from None
        raise


def folder(dir_fd: int, path: str) -> int:
    """A descriptor for the folder ``path`` beneath ``dir_fd``, made as needed. A symlink
    where a folder belongs is drift: it is removed and a real folder made in its place. A
    file there is not ours to remove: NotADirectoryError."""
    parts = parts_of(path)
    if uses_openat2():
        try:
            return _openat2(dir_fd, "/".join(parts), _FOLDER, 0)
        except OSError:
            pass  # something to make or to replace: component by component below
    current = os.open(".", _FOLDER, dir_fd=dir_fd)
    try:
        for part in parts:
            step = _step(current, part)
            os.close(current)
            current = step
    except BaseException:
        os.close(current)
        raise
    return current


def _step(parent: int, part: str) -> int:
    for _ in range(_ATTEMPTS):
        try:
            return _open_one(parent, part)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # made meanwhile: opened next round
                os.mkdir(part, 0o755, dir_fd=parent)
        except NotADirectoryError:
            raise NotADirectoryError(errno.ENOTDIR, "a file where a folder belongs",
                                     part) from None
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            os.unlink(part, dir_fd=parent)  # the link, never what it points at
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=parent)
    raise OSError(errno.ELOOP, "replaced by a link again and again while it was made", part)


def split(path: str) -> tuple[str, str]:
    """(folder, name) of a relative file path."""
    parts = parts_of(path)
    if not parts:
        raise OSError(errno.EISDIR, "a file path names the root itself", path)
    return "/".join(parts[:-1]), parts[-1]
