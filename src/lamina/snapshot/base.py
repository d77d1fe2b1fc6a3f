"""The seam between the builder and filesystem state: :class:`Snapshotter` and :class:`ActiveMount`.

A snapshotter gives a build step a writable root over the parent image's
layer snapshots and, once the step is done, the step's changes as an *upper
dir* in overlayfs format (0:0 character devices for deletions, the xattr
``trusted.overlay.opaque=y`` for replaced directories). :mod:`lamina.snapshot.diff`
turns that dir into a layer tar, and the builder renames it to become the new
layer's snapshot. Two implementations: :class:`~lamina.snapshot.overlay.OverlaySnapshotter`
and the copying :class:`~lamina.snapshot.copyfs.CopySnapshotter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

from lamina.errors import RuntimeError_

SnapshotterName = Literal["auto", "overlayfs", "native"]


class ActiveMount(Protocol):
    """A writable root prepared for one step.

    ``unmount`` ends writing (idempotent); afterwards ``upper`` holds the
    changes. ``discard`` also removes every directory of the mount that is
    still there (rename ``upper`` away first to keep it). As a context manager
    it unmounts when the block succeeds and discards when it raises.
    """

    @property
    def root(self) -> Path: ...

    @property
    def upper(self) -> Path: ...

    def unmount(self) -> None: ...

    def discard(self) -> None: ...

    def __enter__(self) -> ActiveMount: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Snapshotter(Protocol):
    """Prepares mounts over lower snapshots (top-most first) inside a working directory."""

    @property
    def name(self) -> str: ...

    def prepare(self, lowers: Sequence[Path], work_root: Path) -> ActiveMount: ...

    def cleanup_stale(self, work_root: Path) -> int:
        """Remove what dead processes left in ``work_root``; return how many mounts."""
        ...


def choose(name: SnapshotterName | str, probe_dir: Path | None = None, probe_record: Path | None = None) -> Snapshotter:
    """The snapshotter called ``name``; ``auto`` is overlayfs when a mount in ``probe_dir`` works.

    ``probe_record``: where the overlay probe's success is remembered for later processes.
    """
    from lamina.snapshot import copyfs, overlay

    if name == "auto":
        if overlay.available(probe_dir, probe_record):
            return overlay.OverlaySnapshotter(probe_record)
        return copyfs.CopySnapshotter()
    if name == "overlayfs":
        return overlay.OverlaySnapshotter(probe_record)
    if name == "native":
        return copyfs.CopySnapshotter()
    raise RuntimeError_(f"unknown snapshotter {name!r} (expected auto, overlayfs or native)")
