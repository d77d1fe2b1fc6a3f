"""Between images and snapshots: unpack layers on demand, commit upper dirs as layers.

Each layer is unpacked at most once, into ``snapshots/<diff_id hex>``; a
layer lamina built itself never is, because the upper dir it came from is
renamed to be its snapshot. Committing streams the upper dir through one
pass of tar → diff_id hash → compression → blob digest.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from lamina.image.image import Image, Layer
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.store.store import Store

# layerio and snapshot (diff, unpack) are imported where used: a fully cached build needs neither


class LayerManager:
    def __init__(self, store: Store, *, compression: str = "gzip", oci: bool = False,
                 clamp_mtime: int | None = None) -> None:
        self.store = store
        self.compression = compression
        self.oci = oci
        self.clamp_mtime = clamp_mtime
        self._unpacking: dict[Digest, threading.Lock] = {}  # parallel stages unpack a shared layer once
        self._guard = threading.Lock()
        self._unsynced: list[Path] = []  # layer blobs written back lazily, fsync'ed by sync()

    def lowers(self, image: Image) -> list[Path]:
        """Snapshot dirs of the image's layers, top-most first, unpacking what is missing."""
        paths: list[Path] = []
        for layer in image.layers:
            path = self.store.snapshot_path(layer.diff_id)
            if not path.exists():
                with self._guard:
                    lock = self._unpacking.setdefault(layer.diff_id, threading.Lock())
                with lock:
                    opener = functools.partial(self._open_plain, layer.digest)
                    path = _unpack(opener, self.store.snapshots_dir, layer)
            paths.append(path)
        paths.reverse()
        # overlayfs refuses a lower dir listed twice (ELOOP); dropping the lower copy of a
        # repeated layer leaves the merged view unchanged, since the upper copy re-applies it
        return list(dict.fromkeys(paths))

    def sync(self) -> None:
        """Make the layer blobs committed so far durable: one wait at the end of a build.

        A blob's fsync per layer cost 0.5-1.5 s of a cold build while another program's writes
        were being written back; each commit now only starts the writeback (the kernel writes
        while the next steps run) and the build waits once, before the image that names them.
        """
        from lamina.store.blobs import sync_blobs

        with self._guard:
            paths, self._unsynced = self._unsynced, []
        if paths:
            sync_blobs(paths)

    def _open_plain(self, digest: Digest) -> IO[bytes]:
        from lamina.image.layerio import open_layer

        return open_layer(self.store.blobs.open(digest))

    def commit(self, upper: Path, lowers: Sequence[Path]) -> Layer:
        """Turn an upper dir into a layer blob and keep it as that layer's snapshot."""
        from lamina.image.layerio import LayerSink
        from lamina.snapshot.diff import prune_runtime_stubs, write_layer

        prune_runtime_stubs(upper, lowers)
        with self.store.blobs.writer() as blob:
            sink = LayerSink(blob, self.compression, background=True)
            try:
                stats = write_layer(upper, lowers, sink, clamp_mtime=self.clamp_mtime)
                sink.close()
            except BaseException:
                sink.abort()
                raise
            digest = blob.commit(sync=False)  # made durable by sync(), before an image names it
            size = blob.size
        with self._guard:
            self._unsynced.append(self.store.blobs.path(digest))
        diff_id = sink.diff_id
        media_type = mt.layer_type(self.oci, self.compression)
        # docker reports a layer's size as the bytes of the files in it, not of its tar
        self.store.db.add_layer(str(digest), str(diff_id), media_type, size, stats.content_bytes)
        target = self.store.snapshot_path(diff_id)
        try:
            if target.exists():
                raise FileExistsError(target)
            os.rename(upper, target)
        except OSError:  # committed before, or by another process just now
            import shutil  # rarely needed: a cached build does not load it

            shutil.rmtree(upper, ignore_errors=True)
        return Layer(Descriptor(media_type, digest, size), diff_id)


# A gzip bomb (a few MB that inflate to terabytes of zeros) must stop at a bound, not fill the disk:
# a layer may hold at most this many times its compressed size (at least _UNPACK_FLOOR), and never
# more than the store's free space; LAMINA_MAX_LAYER_SIZE (bytes) replaces the first two rules.
_UNPACK_RATIO = 200
_UNPACK_FLOOR = 1 << 30


def unpack_limit(compressed: int, snapshots_dir: Path) -> int:
    """The most bytes of file content a layer of ``compressed`` bytes may unpack to."""
    configured = os.environ.get("LAMINA_MAX_LAYER_SIZE", "").strip()
    limit = int(configured) if configured.isdigit() else max(_UNPACK_FLOOR, _UNPACK_RATIO * compressed)
    try:
        fs = os.statvfs(snapshots_dir)
    except OSError:
        return limit
    return min(limit, fs.f_bavail * fs.f_frsize)


def _unpack(opener: functools.partial[IO[bytes]], snapshots_dir: Path, layer: Layer) -> Path:
    from lamina.errors import LayerError
    from lamina.snapshot.unpack import unpack_to_snapshot

    limit = unpack_limit(layer.size, snapshots_dir)
    try:
        return unpack_to_snapshot(opener, snapshots_dir, layer.diff_id, max_bytes=limit)
    except LayerError as exc:
        if "too large" not in str(exc):
            raise LayerError(f"unpacking layer {layer.digest}: {exc}") from exc
        raise LayerError(f"unpacking layer {layer.digest}: its files hold more than {limit} bytes, the limit "
                         f"(LAMINA_MAX_LAYER_SIZE, else {_UNPACK_RATIO}x its compressed size, at least 1 GiB, "
                         "within the store's free space)") from exc
