"""The few Linux system calls the ``os`` module lacks, through the libc already loaded.

mount, umount2, unshare and sync_file_range, called with ctypes on ``CDLL(None)``
(the process's own libc: ``ctypes.util.find_library`` would fork ``ldconfig -p``).
Failures raise :class:`OSError` with errno and the path, as ``os`` functions do;
callers that treat a failure as "not here" catch it. ctypes is imported on first
call only: a fully cached build makes none of these calls. Also :func:`cpus`, the CPUs
this process may use, for the build's thread counts.
"""

from __future__ import annotations

import functools
import os
from typing import Any

MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000
SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    libc.unshare.argtypes = (ctypes.c_int,)
    libc.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return libc


def _check(result: int, path: str | bytes | os.PathLike[str] | None = None) -> None:
    if result != 0:
        import ctypes

        code = ctypes.get_errno()
        if path is None:
            raise OSError(code, os.strerror(code))
        raise OSError(code, os.strerror(code), os.fsdecode(path))


def mount(source: str, target: str | os.PathLike[str], fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2)."""
    _check(_libc().mount(os.fsencode(source), os.fsencode(target), fstype.encode() if fstype else None, flags,
                         data.encode() if data is not None else None), target)


def umount(target: str | os.PathLike[str], *, detach: bool = False) -> None:
    """umount2(2); ``detach``: MNT_DETACH, a lazy unmount of a busy mount."""
    _check(_libc().umount2(os.fsencode(target), MNT_DETACH if detach else 0), target)


def unshare(flags: int) -> None:
    """unshare(2), e.g. :data:`CLONE_NEWNS` for a mount namespace of this process's own."""
    _check(_libc().unshare(flags))


def cpus() -> int:
    """The CPUs this process may run on: its affinity mask (a container's cpuset), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def start_writeback(fd: int) -> None:
    """sync_file_range(2) with SYNC_FILE_RANGE_WRITE: start writing ``fd``'s dirty pages, not waiting."""
    _check(_libc().sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE))


__all__ = ["CLONE_NEWNS", "MNT_DETACH", "MS_PRIVATE", "MS_REC", "cpus", "mount", "start_writeback", "umount",
           "unshare"]
