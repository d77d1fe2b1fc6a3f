"""Per-key locks between lamina processes (and threads) sharing a store.

Two builds of the same Dockerfile started at once would both miss the cache
and both run every step, producing two sets of layers for one set of inputs.
Holding ``KeyLocks.hold(key)`` around "look up, else compute and record"
makes the second build wait for the first and then hit its cache record.
The locks are ``flock`` on small files, so the kernel releases them when a
process dies: a killed build never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class KeyLocks:
    """Exclusive locks named by arbitrary keys, under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._threads: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _file(self, key: str) -> Path:
        return self.directory / (_SAFE.sub("_", key)[-120:] + ".lock")

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold the lock for ``key``: blocks while another thread or process holds it."""
        with self._guard:
            local = self._threads.setdefault(key, threading.Lock())
        with local:  # flock is per open file description: threads need their own exclusion
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self._file(key)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                # the file stays: unlinking it would let a waiter lock an orphaned inode
                os.close(fd)


__all__ = ["KeyLocks"]
