"""The local store: blobs (OCI layout) + metadata (SQLite) behind one facade.

Layout of a store root::

    oci-layout, index.json   so OCI tools recognise the directory
    blobs/sha256/<hex>       manifests, configs, layers
    lamina.db                tags, images, layers, cache records, stat cache
    snapshots/<hex>          unpacked layers (by diff_id), in overlayfs form
    tmp/                     temp files, renamed into place when complete
    runc/                    the OCI runtime's state

Writes are ordered so a crash never leaves a reference to missing content:
blobs first, then the image row, then the tag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import ImageNotFound, LaminaError, ReferenceError_, StoreError
from lamina.image.image import Image, Layer
from lamina.oci import mediatype as mt
from lamina.oci.config import ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, decode
from lamina.oci.reference import Reference
from lamina.store.blobs import BlobStore
from lamina.store.db import Metadata

_ID_PREFIX = re.compile(r"^(?:sha256:)?([a-f0-9]{4,64})$")


def default_root() -> Path:
    """``$LAMINA_ROOT``, else ``/var/lib/lamina`` for root, else the XDG data dir."""
    env = os.environ.get("LAMINA_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/lamina")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "lamina"


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image as the store holds it, with the digests of its blobs."""

    manifest_digest: Digest
    manifest: Manifest
    config_digest: Digest
    image: Image

    @property
    def id(self) -> Digest:  # noqa: A003 - docker's word: the image ID is the config digest
        return self.config_digest


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root)
        self.blobs.init()
        self.snapshots_dir = self.root / "snapshots"
        self.snapshots_dir.mkdir(exist_ok=True)
        self.db = Metadata(self.root / "lamina.db")

    def close(self) -> None:
        self.db.close()

    # writing images ---------------------------------------------------------
    def put_image(self, image: Image, *, oci: bool = False) -> StoredImage:
        """Write config and manifest blobs and record the image (layers must be in already)."""
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

    def put_manifest_bytes(self, data: bytes, *, image: Image | None = None) -> StoredImage:
        """Record a manifest whose config and layers are already blobs."""
        parsed = decode(data)
        if not isinstance(parsed, Manifest):
            raise StoreError("expected an image manifest, got an index")
        if image is None:
            image = self._image_of(parsed)
        digest = self.blobs.put(data)
        for layer in image.layers:
            self.db.add_layer(str(layer.digest), str(layer.diff_id), layer.desc.media_type, layer.size)
        self.db.add_image(str(digest), str(parsed.config.digest), parsed.media_type)
        return StoredImage(digest, parsed, parsed.config.digest, image)

    def _image_of(self, manifest: Manifest) -> Image:
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
        return StoredImage(manifest_digest, manifest, manifest.config.digest, self._image_of(manifest))

    def lookup(self, name: str) -> StoredImage | None:
        """Find an image by tag, ``name@digest``, image ID or unique ID prefix."""
        m = _ID_PREFIX.match(name)
        if m and (name.startswith("sha256:") or len(m.group(1)) >= 12 or not self._is_tag(name)):
            rows = self.db.images_by_prefix(m.group(1))
            if len(rows) == 1 or (rows and len({r[1] for r in rows}) == 1):
                return self.get(Digest.parse(rows[0][0]))
            if len(rows) > 1:
                raise StoreError(f"ambiguous image ID prefix {name!r}")
            if name.startswith("sha256:"):
                return None
        try:
            ref = Reference.parse(name)
        except ReferenceError_:
            if m:
                return None
            raise
        if ref.digest is not None:
            if self.db.image(str(ref.digest)) is not None:
                return self.get(ref.digest)
            return None
        manifest = self.db.tag(str(ref))
        return self.get(Digest.parse(manifest)) if manifest else None

    def _is_tag(self, name: str) -> bool:
        try:
            return self.db.tag(str(Reference.parse(name))) is not None
        except LaminaError:
            return False

    def resolve(self, name: str) -> StoredImage:
        found = self.lookup(name)
        if found is None:
            raise ImageNotFound(f"no such image: {name}")
        return found

    # tags ---------------------------------------------------------------------
    def tag(self, ref: Reference, manifest_digest: Digest) -> None:
        if self.db.image(str(manifest_digest)) is None:
            raise ImageNotFound(f"no such image: {manifest_digest}")
        self.db.set_tag(str(ref), str(manifest_digest))

    def untag(self, ref: Reference) -> bool:
        return self.db.remove_tag(str(ref))

    def tags_of(self, manifest_digest: Digest) -> list[Reference]:
        return [Reference.parse(t) for t in self.db.tags_of(str(manifest_digest))]

    def snapshot_path(self, diff_id: Digest) -> Path:
        return self.snapshots_dir / diff_id.hex
