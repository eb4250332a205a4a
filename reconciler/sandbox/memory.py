"""The daemon's own W^X, without its children's.

systemd's ``MemoryDenyWriteExecute=yes`` covers the service and every process it starts,
and nothing below can lift it; torch's CPU kernels (oneDNN) generate machine code at run
time, so under it every CPU gauntlet failed ("could not create a primitive"). The unit
therefore leaves it off, and the daemon denies writable-and-executable memory to itself
only: ``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN | PR_MDWE_NO_INHERIT)`` (Linux 6.6
and later). Its sandboxed children, the gauntlet worker among them, start without it.
"""

from __future__ import annotations

import ctypes

PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1
PR_MDWE_NO_INHERIT = 2


def deny_write_execute_to_this_process() -> bool:
    """True when this process now refuses W+X mappings and its children will not inherit
    that; False where the kernel cannot do it (then nothing changed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = PR_MDWE_REFUSE_EXEC_GAIN | PR_MDWE_NO_INHERIT
    if libc.prctl(PR_SET_MDWE, flags, 0, 0, 0) != 0:
        return False
    return bool(libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) == flags)
