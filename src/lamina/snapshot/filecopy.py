"""Copying a regular file's bytes inside the kernel, whatever the two filesystems are.

``copy_file_range`` copies (or shares extents: a reflink on btrfs and XFS) without the
bytes passing through this process, but only within one filesystem type: from the build
context on ext4 into a step's overlayfs mount it fails with ``EXDEV``, which is every
COPY. ``sendfile`` copies between any two regular files in the kernel; a read/write loop
is the last resort (e.g. a FUSE source without splice support).
"""

from __future__ import annotations

import errno
import os

_CHUNK = 1 << 30  # bytes per system call; sendfile stops at 0x7ffff000 anyway
_BUFFER = 1 << 20
# "not between these two files": try the next method (offsets are consistent after any of them)
_FALLBACK = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF,
                       errno.ETXTBSY, errno.EPERM})


def copy_fd(fd_in: int, fd_out: int) -> int:
    """Copy from ``fd_in``'s offset to its end into ``fd_out`` at its offset; return the bytes copied.

    Both offsets advance, as with read and write. Errors other than "this
    method cannot copy between these files" (ENOSPC, EIO, ...) are raised.
    """
    total = 0
    for method in (_copy_file_range, _sendfile):
        try:
            while n := method(fd_in, fd_out):
                total += n
            return total
        except OSError as exc:
            if exc.errno not in _FALLBACK:
                raise
    while data := os.read(fd_in, _BUFFER):
        view = memoryview(data)
        while view:
            view = view[os.write(fd_out, view):]
        total += len(data)
    return total


def _copy_file_range(fd_in: int, fd_out: int) -> int:
    return os.copy_file_range(fd_in, fd_out, _CHUNK)


def _sendfile(fd_in: int, fd_out: int) -> int:
    return os.sendfile(fd_out, fd_in, None, _CHUNK)


__all__ = ["copy_fd"]
