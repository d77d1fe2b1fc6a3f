"""Filesystem state for build steps: layer snapshots, overlay mounts, upper dir → layer tar.

Each layer is unpacked once into ``<snapshots>/<diff_id hex>`` in overlayfs
format (:func:`unpack_to_snapshot`); a step gets an :class:`ActiveMount` over
its parent's snapshots from a :class:`Snapshotter` (:func:`choose`); its
upper dir becomes a layer with :func:`write_layer` and then the new layer's
snapshot.
"""

from lamina.snapshot.base import ActiveMount, Snapshotter, SnapshotterName, choose
from lamina.snapshot.copyfs import CopyMount, CopySnapshotter
from lamina.snapshot.diff import (
    DiffStats,
    LayerEntry,
    prune_runtime_stubs,
    read_layer_entries,
    write_layer,
    write_layer_from_dir,
)
from lamina.snapshot.overlay import OverlayMount, OverlaySnapshotter, available
from lamina.snapshot.unpack import UnpackStats, unpack_layer, unpack_to_snapshot

__all__ = [
    "ActiveMount",
    "CopyMount",
    "CopySnapshotter",
    "DiffStats",
    "LayerEntry",
    "OverlayMount",
    "OverlaySnapshotter",
    "Snapshotter",
    "SnapshotterName",
    "UnpackStats",
    "available",
    "choose",
    "prune_runtime_stubs",
    "read_layer_entries",
    "unpack_layer",
    "unpack_to_snapshot",
    "write_layer",
    "write_layer_from_dir",
]
