"""Progress of a pull or push, as data: the CLI renders it, the library never prints.

Callbacks may be invoked from worker threads, but never two at once: the
:class:`Emitter` serializes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from lamina.model import model
from lamina.oci.digest import Digest

BlobKind = Literal["manifest", "config", "layer"]
BlobStatus = Literal[
    "waiting",      # queued
    "exists",       # already present at the destination: nothing to transfer
    "mounted",      # pushed by a cross-repository mount: nothing to transfer
    "transferring",  # bytes moving; ``done`` counts them
    "complete",     # transferred and verified
]


@model
class BlobProgress:
    """One blob's state; ``done`` and ``total`` are bytes."""

    digest: Digest
    kind: BlobKind
    status: BlobStatus
    done: int
    total: int


@model
class Resolved:
    """The manifest a reference named, once known (before any blob moves)."""

    reference: str
    digest: Digest
    media_type: str


Event = BlobProgress | Resolved
Progress = Callable[[Event], None]


class Emitter:
    """Calls ``progress`` under a lock (or does nothing when there is no callback)."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if self._progress is not None:
            with self._lock:
                self._progress(event)

    def blob(self, digest: Digest, kind: BlobKind, status: BlobStatus, done: int, total: int) -> None:
        if self._progress is not None:
            self(BlobProgress(digest, kind, status, done, total))


__all__ = ["BlobKind", "BlobProgress", "BlobStatus", "Emitter", "Event", "Progress", "Resolved"]
