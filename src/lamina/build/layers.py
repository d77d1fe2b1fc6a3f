"""Between images and snapshots: unpack layers on demand, commit upper dirs as layers.

Each layer is unpacked at most once, into ``snapshots/<diff_id hex>``; a
layer lamina built itself never is, because the upper dir it came from is
renamed to be its snapshot. Committing streams the upper dir through one
pass of tar → diff_id hash → compression → blob digest.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from lamina.image.image import Image, Layer
from lamina.image.layerio import LayerSink, open_layer
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.snapshot.diff import prune_runtime_stubs, write_layer
from lamina.snapshot.unpack import unpack_to_snapshot
from lamina.store.store import Store


class LayerManager:
    def __init__(self, store: Store, *, compression: str = "gzip", oci: bool = False,
                 clamp_mtime: int | None = None) -> None:
        self.store = store
        self.compression = compression
        self.oci = oci
        self.clamp_mtime = clamp_mtime

    def lowers(self, image: Image) -> list[Path]:
        """Snapshot dirs of the image's layers, top-most first, unpacking what is missing."""
        paths: list[Path] = []
        for layer in image.layers:
            path = self.store.snapshot_path(layer.diff_id)
            if not path.exists():
                opener = functools.partial(self._open_plain, layer.digest)
                path = unpack_to_snapshot(opener, self.store.snapshots_dir, layer.diff_id)
            paths.append(path)
        paths.reverse()
        # overlayfs refuses a lower dir listed twice (ELOOP); dropping the lower copy of a
        # repeated layer leaves the merged view unchanged, since the upper copy re-applies it
        return list(dict.fromkeys(paths))

    def _open_plain(self, digest: Digest) -> IO[bytes]:
        return open_layer(self.store.blobs.open(digest))

    def commit(self, upper: Path, lowers: Sequence[Path]) -> Layer:
        """Turn an upper dir into a layer blob and keep it as that layer's snapshot."""
        prune_runtime_stubs(upper, lowers)
        with self.store.blobs.writer() as blob:
            sink = LayerSink(blob, self.compression)
            stats = write_layer(upper, lowers, sink, clamp_mtime=self.clamp_mtime)
            sink.close()
            digest = blob.commit()
            size = blob.size
        diff_id = sink.diff_id
        media_type = mt.layer_type(self.oci, self.compression)
        # docker reports a layer's size as the bytes of the files in it, not of its tar
        self.store.db.add_layer(str(digest), str(diff_id), media_type, size, stats.content_bytes)
        target = self.store.snapshot_path(diff_id)
        if target.exists():
            shutil.rmtree(upper, ignore_errors=True)
        else:
            try:
                os.rename(upper, target)
            except OSError:  # another process committed the same layer first
                shutil.rmtree(upper, ignore_errors=True)
        return Layer(Descriptor(media_type, digest, size), diff_id)
