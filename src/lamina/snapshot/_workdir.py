"""Private working directories that say whether their owner is still alive.

Each active mount lives in ``<work_root>/mnt-<pid>-<random>/`` and holds an
exclusive ``flock`` on its ``lock`` file for as long as it exists. A
directory is stale when its lock can be taken and the process named in it is
gone: the lock guards against pid reuse, the pid against racing a process that
has made the directory but not yet locked it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lamina.store.lease import process_alive

PREFIX = "mnt-"


def new_workdir(work_root: Path) -> tuple[Path, int]:
    """Create and lock a fresh working directory; return it and the lock's descriptor."""
    work_root.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=work_root))
    fd = os.open(base / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return base, fd


def stale_workdirs(work_root: Path) -> Iterator[Path]:
    """Yield the working directories of dead processes, each locked while the caller handles it."""
    if not work_root.is_dir():
        return
    for entry in sorted(os.scandir(work_root), key=lambda e: e.name):
        if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        if process_alive(_pid_of(entry.name)):
            continue
        try:
            fd = os.open(os.path.join(entry.path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield Path(entry.path)
        finally:
            os.close(fd)


def _pid_of(name: str) -> int:
    with contextlib.suppress(ValueError, IndexError):
        return int(name[len(PREFIX) :].split("-", 1)[0])
    return 0

