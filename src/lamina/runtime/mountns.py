"""A private mount namespace for the lamina process itself.

Overlay mounts made for build steps live in this namespace, so when the
process dies (even by SIGKILL) the kernel drops them: no stale mounts can
block the next build. It must happen while the process is single-threaded.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_done = False


def enter_private_mount_namespace() -> bool:
    """Unshare our mount namespace (root only); False if it could not be done."""
    global _done
    if _done:
        return True
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)  # libc is loaded already; find_library would fork ldconfig
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    _done = True
    return True


def in_private_mount_namespace() -> bool:
    """Whether :func:`enter_private_mount_namespace` succeeded in this process."""
    return _done
