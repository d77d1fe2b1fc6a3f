"""The local store: blobs (OCI layout) + metadata (SQLite) behind one facade.

Layout of a store root::

    oci-layout, index.json   so OCI tools recognise the directory
    blobs/sha256/<hex>       manifests, configs, layers
    lamina.db                tags, images, layers, cache records, stat cache
    snapshots/<hex>          unpacked layers (by diff_id), in overlayfs form
    tmp/                     temp files, renamed into place when complete
    runc/                    the OCI runtime's state
    locks/                   a lock file per step being built (store/keylock.py), swept by gc

Writes are ordered so a crash never leaves a reference to missing content:
blobs first, then the image row, then the tag.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.errors import ImageNotFound, LaminaError, ReferenceError_, StoreError
from lamina.model import model
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, decode
from lamina.oci.reference import Reference
from lamina.store.blobs import BlobStore
from lamina.store.db import DB_FILE, Metadata
from lamina.store.paths import default_root  # noqa: F401  (its home before paths.py)

if TYPE_CHECKING:
    from lamina.image.image import Image, Layer

_ID_PREFIX = re.compile(r"^(?:sha256:)?([a-f0-9]{4,64})$")




@model
class StoredImage:
    """An image as the store holds it, with the digests of its blobs.

    ``source`` is the image or a function that decodes it from its config blob on first use
    (``image``): a push, a tag or a removal needs only the manifest, and decoding the config
    loads its model (a dozen dataclasses) into the process.
    """

    manifest_digest: Digest
    manifest: Manifest
    config_digest: Digest
    source: Image | Callable[[], Image] = field(repr=False, compare=False)
    _decoded: list[Image] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def image(self) -> Image:
        if not self._decoded:
            self._decoded.append(self.source() if callable(self.source) else self.source)
        return self._decoded[0]

    @property
    def id(self) -> Digest:  # noqa: A003 - docker's word: the image ID is the config digest
        return self.config_digest


class Store:
    def __init__(self, root: Path, *, db: Metadata | None = None) -> None:
        """``db``: this store's metadata, already open (a memoized build's; see api.build_memoized)."""
        self.root = Path(root).absolute()  # runc, overlay options and bundles need absolute paths
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root)
        self.blobs.init()
        self.snapshots_dir = self.root / "snapshots"
        self.snapshots_dir.mkdir(exist_ok=True)
        self.db = db if db is not None else Metadata(self.root / DB_FILE)

    def close(self) -> None:
        self.db.close()

    # writing images ---------------------------------------------------------
    def put_image(self, image: Image, *, oci: bool = False) -> StoredImage:
        """Write config and manifest blobs and record the image (layers must be in already)."""
        from lamina.image.image import Image, Layer

        for layer in image.layers:
            if not self.blobs.has(layer.digest):
                raise StoreError(f"layer {layer.digest} of the image is not in the store")
        config_bytes = image.config.encode()
        config_digest = self.blobs.put(config_bytes)
        config_desc = Descriptor(mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG, config_digest, len(config_bytes))
        manifest = image.manifest(config_desc, oci=oci)
        # The layers as the manifest names them (media types follow the flavour), as get() returns them.
        layers = tuple(Layer(d, lay.diff_id) for d, lay in zip(manifest.layers, image.layers, strict=True))
        return self.put_manifest_bytes(manifest.encode(), image=Image(image.config, layers))

    def put_manifest_bytes(self, data: bytes, *, image: Image | None = None,
                           sizes: Mapping[Digest, int] | None = None) -> StoredImage:
        """Record a manifest whose config and layers are already blobs.

        ``sizes`` are docker's sizes of layers (by digest) when known, for ``images``/``history``.
        """
        parsed = decode(data)
        if not isinstance(parsed, Manifest):
            raise StoreError("expected an image manifest, got an index")
        if image is None:
            image = self._image_of(parsed)
        digest = self.blobs.put(data)
        for layer in image.layers:
            self.db.add_layer(str(layer.digest), str(layer.diff_id), layer.desc.media_type, layer.size,
                              (sizes or {}).get(layer.digest, -1))
        self.db.add_image(str(digest), str(parsed.config.digest), parsed.media_type)
        return StoredImage(digest, parsed, parsed.config.digest, image)

    def _image_of(self, manifest: Manifest) -> Image:
        from lamina.image.image import Image, Layer
        from lamina.oci.config import ImageConfig

        config = ImageConfig.decode(self.blobs.read(manifest.config.digest))
        if len(config.diff_ids) != len(manifest.layers):
            raise StoreError(f"image config lists {len(config.diff_ids)} layers, manifest {len(manifest.layers)}")
        layers = tuple(Layer(d, diff_id) for d, diff_id in zip(manifest.layers, config.diff_ids, strict=True))
        return Image(config, layers)

    # reading images ---------------------------------------------------------
    def get(self, manifest_digest: Digest) -> StoredImage:
        row = self.db.image(str(manifest_digest))
        if row is None:
            raise ImageNotFound(f"no such image: {manifest_digest}")
        data = self.blobs.read(manifest_digest)
        manifest = decode(data)
        if isinstance(manifest, Index):
            raise StoreError(f"{manifest_digest} is an index, not an image")
        return StoredImage(manifest_digest, manifest, manifest.config.digest, functools.partial(self._image_of, manifest))

    def lookup(self, name: str) -> StoredImage | None:
        """Find an image as docker does: a full image ID or digest, then a tag or ``name@digest``,
        and only then a unique prefix of an image ID (so a tag that looks like hex wins)."""
        m = _ID_PREFIX.match(name)
        if m and len(m.group(1)) == 64:
            found = self._by_id_prefix(name, m.group(1))
            if found is not None or name.startswith("sha256:"):
                return found
        try:
            ref: Reference | None = Reference.parse(name)
        except ReferenceError_:
            if not m:
                raise
            ref = None
        if ref is not None and ref.digest is not None:
            if self.db.image(str(ref.digest)) is not None:
                return self.get(ref.digest)
            pulled = self.db.manifest_by_repo_digest(ref.repository, str(ref.digest))  # e.g. an index's digest
            return self.get(Digest.parse(pulled)) if pulled and self.db.image(pulled) else None
        manifest = self.db.tag(str(ref)) if ref is not None else None
        if manifest:
            return self.get(Digest.parse(manifest))
        return self._by_id_prefix(name, m.group(1)) if m else None

    def _by_id_prefix(self, name: str, prefix: str) -> StoredImage | None:
        rows = self.db.images_by_prefix(prefix)
        ids = sorted({r[1] for r in rows})
        if len(ids) > 1:
            shown = ", ".join(Digest.parse(i).short for i in ids[:3]) + (", …" if len(ids) > 3 else "")
            raise StoreError(f"ambiguous image ID prefix {name!r}: it matches {len(ids)} images ({shown})")
        if not rows:
            return None
        exact = [r for r in rows if prefix in (r[0][7:], r[1][7:])]  # a manifest digest names one manifest
        return self.get(Digest.parse((exact or rows)[0][0]))

    def layer_size(self, layer: Layer) -> int:
        """docker's size of ``layer`` (its files' bytes): recorded when it came in, else counted once
        from its blob and recorded (layers from older stores or build-cache imports); the blob's
        size if even that fails."""
        known = self.db.diff_size(str(layer.digest))
        if known is not None:
            return known
        from lamina.image.layersize import blob_size

        try:
            with self.blobs.open(layer.digest) as blob:
                counted = blob_size(blob)
        except (LaminaError, OSError):
            counted = None
        if counted is None:
            return layer.size
        with contextlib.suppress(sqlite3.Error):  # a read-only store still answers
            self.db.add_layer(str(layer.digest), str(layer.diff_id), layer.desc.media_type, layer.size, counted)
        return counted

    def resolve(self, name: str) -> StoredImage:
        found = self.lookup(name)
        if found is None:
            raise ImageNotFound(f"no such image: {name}")
        return found

    # tags ---------------------------------------------------------------------
    def tag(self, ref: Reference, manifest_digest: Digest) -> None:
        if not self.db.set_tag_if_image(str(ref), str(manifest_digest)):  # atomic against prune
            raise ImageNotFound(f"no such image: {manifest_digest}")

    def untag(self, ref: Reference) -> bool:
        return self.db.remove_tag(str(ref))

    def tags_of(self, manifest_digest: Digest) -> list[Reference]:
        return [Reference.parse(t) for t in self.db.tags_of(str(manifest_digest))]

    def snapshot_path(self, diff_id: Digest) -> Path:
        return self.snapshots_dir / diff_id.hex
