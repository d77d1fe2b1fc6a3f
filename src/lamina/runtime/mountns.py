"""A private mount namespace for the lamina process itself.

Overlay mounts made for build steps live in this namespace, so when the
process dies (even by SIGKILL) the kernel drops them: no stale mounts can
block the next build. It must happen while the process is single-threaded.
"""

from __future__ import annotations

import os

from lamina import syscalls

_done = False


def enter_private_mount_namespace() -> bool:
    """Unshare our mount namespace (root only); False if it could not be done."""
    global _done
    if _done:
        return True
    if os.geteuid() != 0:
        return False
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount("none", "/", flags=syscalls.MS_REC | syscalls.MS_PRIVATE)
    except OSError:
        return False
    _done = True
    return True


def in_private_mount_namespace() -> bool:
    """Whether :func:`enter_private_mount_namespace` succeeded in this process."""
    return _done
