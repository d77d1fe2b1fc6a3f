"""Bringing layer bytes into the store: one streaming pass per layer, and ``docker import``.

:func:`ingest_layer` reads a (possibly compressed) layer exactly once: it
hashes the bytes as they arrive (the digest an archive names them by),
decompresses them to hash the plain tar (the diff_id), and writes a blob the
store can serve. gzip and zstd blobs are kept byte for byte, so a manifest
that names them stays valid; a plain, bzip2 or xz tar is recompressed with
deterministic gzip, so the same tar always becomes the same blob.

The archive reader gathers what it streamed into :class:`Members`; the
format planners turn those into :class:`Planned` images, which
:func:`prepare` validates (diff_ids, counts) without I/O before anything
is recorded or tagged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO, cast

from lamina.errors import DigestMismatch, DockerfileError, LaminaError, LayerError
from lamina.image.image import Image, Layer
from lamina.image.layerio import LayerSink, detect_compression, open_layer
from lamina.image.layersize import SizeCounter
from lamina.model import model
from lamina.oci import mediatype as mt
from lamina.oci.config import ContainerConfig, History, ImageConfig
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Manifest, decode, encode_json
from lamina.oci.reference import Reference
from lamina.store.blobs import BlobWriter
from lamina.store.store import Store, StoredImage

CHUNK = 1 << 20
_MAX_LINKS = 40


@model
class Ingested:
    """A layer after it went into the store: as archived (``raw_*``) and as stored."""

    raw_digest: Digest
    raw_size: int
    digest: Digest
    size: int
    diff_id: Digest
    compression: str  # of the stored blob: "gzip" or "zstd"
    content_size: int | None = None  # docker's size of the layer (lamina.image.layersize), when counted

    @property
    def unchanged(self) -> bool:
        """Whether the store holds the archived bytes themselves (so manifests naming them hold)."""
        return self.digest == self.raw_digest


class _Tee:
    """A reader that hashes (and optionally copies to ``sink``) every byte it passes on."""

    def __init__(self, src: Prefixed, sink: BlobWriter | None) -> None:
        self._src = src
        self._sink = sink
        self.hasher = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self.hasher.update(data)
        self.size += len(data)
        if self._sink is not None and data:
            self._sink.write(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        """The caller owns the source stream; closing the decompressor must not close it."""


def ingest_layer(store: Store, src: IO[bytes] | Prefixed, *, expected: Digest | None = None,
                 keep: frozenset[str] = frozenset({"gzip", "zstd"})) -> Ingested:
    """Store one layer from ``src`` (read to its end, not closed).

    Blobs compressed with a method in ``keep`` are stored as they are; anything
    else is decompressed and recompressed with gzip. ``expected`` is the digest
    of the bytes as read (an OCI ``blobs/sha256/<hex>`` name); a mismatch
    stores nothing.
    """
    head = src if isinstance(src, Prefixed) else Prefixed(src)
    kind = detect_compression(head.peek(6))
    with store.blobs.writer() as writer:
        as_is = kind in keep
        tee = _Tee(head, writer if as_is else None)
        counter = SizeCounter()
        try:
            plain = open_layer(cast(BinaryIO, tee))
            if as_is:
                hasher = hashlib.sha256()
                while chunk := plain.read(CHUNK):
                    hasher.update(chunk)
                    counter.feed(chunk)
                diff_id = Digest.from_hasher(hasher)
            else:
                sink = LayerSink(writer, "gzip", background=True)  # decompressing here, compressing there
                try:
                    while chunk := plain.read(CHUNK):
                        sink.write(chunk)
                        counter.feed(chunk)
                    sink.close()
                finally:
                    sink.abort()  # a no-op once closed
                diff_id = sink.diff_id
            tee.drain()
        except (OSError, EOFError, ValueError) as exc:  # zlib/zstd/lzma errors derive from these
            raise LayerError(f"layer is not a readable {kind} stream: {exc}") from exc
        raw = Digest.from_hasher(tee.hasher)
        if expected is not None and raw != expected:
            raise DigestMismatch(f"blob {expected}: content hashes to {raw}")
        digest = writer.commit()
        return Ingested(raw, tee.size, digest, writer.size, diff_id, kind if as_is else "gzip", counter.size)


class Prefixed:
    """A stream with ``head`` (bytes already read from ``src``) put back in front; peekable."""

    def __init__(self, src: IO[bytes], head: bytes = b"") -> None:
        self._src = src
        self._head = head

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            more = self._src.read(n - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:n]

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                data, self._head = self._head + self._src.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._src.read(n)


# -- what an archive held, and the images planned from it ----------------------------------

@model
class Members:
    """One pass over an archive: small files in memory, layers in the store, links as aliases.

    Keys are member names normalized by :func:`member_key`; they are only ever
    looked up here, never used as file system paths.
    """

    files: Mapping[str, bytes]
    layers: Mapping[str, Ingested]
    links: Mapping[str, str]

    def resolve(self, name: str) -> str:
        key = member_key(name)
        for _ in range(_MAX_LINKS):
            if key not in self.links:
                return key
            key = self.links[key]
        raise LaminaError(f"archive: too many links resolving {name!r}")

    def file(self, name: str, what: str) -> bytes:
        key = self.resolve(name)
        if key in self.files:
            return self.files[key]
        if key in self.layers:
            raise LaminaError(f"archive: {what} {name!r} is a layer, not a JSON file")
        raise LaminaError(f"archive: {what} {name!r} is missing")

    def layer(self, name: str, what: str) -> Ingested:
        key = self.resolve(name)
        if key in self.layers:
            return self.layers[key]
        if key in self.files:
            raise LaminaError(f"archive: {what} {name!r} is not a layer tar")
        raise LaminaError(f"archive: {what} {name!r} is missing")

    def blob(self, desc: Descriptor, what: str) -> bytes:
        """A small blob of an OCI layout, checked against its descriptor."""
        data = self.file(blob_name(desc.digest), what)
        if len(data) != desc.size or Digest.of(data) != desc.digest:
            raise DigestMismatch(f"archive: {what} {desc.digest}: size or digest does not match")
        return data

    def layer_blob(self, desc: Descriptor, what: str) -> Ingested:
        found = self.layer(blob_name(desc.digest), what)
        if found.raw_size != desc.size or found.raw_digest != desc.digest:
            raise DigestMismatch(f"archive: {what} {desc.digest}: size or digest does not match")
        return found


def member_key(name: str) -> str:
    """A tar member name as a lookup key: ``./a/../b`` and ``/b`` both become ``b``."""
    parts: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


@model
class Planned:
    """An image found in an archive, before validation: config bytes, layers, names."""

    config: bytes
    layers: tuple[Ingested, ...]
    oci: bool
    refs: tuple[Reference, ...]
    manifest: bytes | None = None  # exact bytes to keep, when they name the stored blobs


def prepare(plan: Planned) -> tuple[Image, bytes]:
    """Check the plan (diff_ids, counts) and return the image and its manifest bytes; no I/O."""
    config = ImageConfig.decode(plan.config)
    got = tuple(layer.diff_id for layer in plan.layers)
    if len(config.diff_ids) != len(got):
        raise LaminaError(f"image config lists {len(config.diff_ids)} layers, the archive {len(got)}")
    for i, (want, have) in enumerate(zip(config.diff_ids, got, strict=True)):
        if want != have:
            raise DigestMismatch(f"layer {i}: diff_id {have} does not match the config's {want}")
    if plan.manifest is not None:
        manifest = decode(plan.manifest)
        if isinstance(manifest, Manifest) and _names_blobs(manifest, plan):
            layers = tuple(Layer(d, ing.diff_id) for d, ing in zip(manifest.layers, plan.layers, strict=True))
            return Image(config, layers), plan.manifest
    layers = tuple(Layer(Descriptor(mt.layer_type(plan.oci, ing.compression), ing.digest, ing.size), ing.diff_id)
                   for ing in plan.layers)
    config_type = mt.OCI_CONFIG if plan.oci else mt.DOCKER_CONFIG
    config_desc = Descriptor(config_type, Digest.of(plan.config), len(plan.config))
    image = Image(config, layers)
    return image, image.manifest(config_desc, oci=plan.oci).encode()


def _names_blobs(manifest: Manifest, plan: Planned) -> bool:
    return (manifest.config.digest == Digest.of(plan.config)
            and [d.digest for d in manifest.layers] == [ing.digest for ing in plan.layers])


def commit(store: Store, plan: Planned, image: Image, manifest: bytes) -> StoredImage:
    """Record a prepared image (its layers are already blobs)."""
    store.blobs.put(plan.config)
    sizes = {ing.digest: ing.content_size for ing in plan.layers if ing.content_size is not None}
    return store.put_manifest_bytes(manifest, image=image, sizes=sizes)


# -- docker import ----------------------------------------------------------------------------

def import_rootfs(store: Store, tarball: BinaryIO | Path, ref: Reference | None, *,
                  changes: Sequence[str] = (), message: str = "",
                  platform: Platform | None = None) -> StoredImage:
    """Make a one-layer image of a root file system tar, as ``docker import`` does.

    The tar (plain or compressed) is stored as one gzip layer without touching
    its entries. ``created`` is ``$SOURCE_DATE_EPOCH`` if set, else now.
    """
    if isinstance(tarball, Path):
        with open(tarball, "rb") as f:
            return import_rootfs(store, f, ref, changes=changes, message=message, platform=platform)
    container = apply_changes(ContainerConfig(), changes)
    layer = ingest_layer(store, tarball, keep=frozenset({"gzip"}))
    config_bytes = import_config(layer.diff_id, container, message or "Imported from -",
                                 platform or Platform.host(), created_now())
    plan = Planned(config_bytes, (layer,), oci=False, refs=(ref,) if ref else ())
    image, manifest = prepare(plan)
    stored = commit(store, plan, image, manifest)
    if ref is not None:
        store.tag(ref, stored.manifest_digest)
    return stored


def import_config(diff_id: Digest, container: ContainerConfig, comment: str,
                  platform: Platform, created: str) -> bytes:
    """The config blob of an imported image; docker also puts the comment at the top level."""
    config = ImageConfig(config=container, diff_ids=(diff_id,),
                         history=(History(created=created, comment=comment),),
                         architecture=platform.architecture, os=platform.os, variant=platform.variant,
                         os_version=platform.os_version, created=created)
    doc = config.to_json()
    doc["comment"] = comment
    return encode_json(dict(sorted(doc.items())))


def created_now(now: datetime | None = None) -> str:
    """RFC 3339 time of an import: ``$SOURCE_DATE_EPOCH`` wins over the clock, for reproducibility."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            now = datetime.fromtimestamp(int(epoch), UTC)
        except (ValueError, OverflowError) as exc:
            raise LaminaError(f"invalid SOURCE_DATE_EPOCH {epoch!r}") from exc
    now = (now or datetime.now(UTC)).astimezone(UTC)
    text = now.strftime("%Y-%m-%dT%H:%M:%S")
    if now.microsecond:
        text += f".{now.microsecond:06d}".rstrip("0")
    return text + "Z"


def apply_changes(config: ContainerConfig, changes: Sequence[str]) -> ContainerConfig:
    """Apply ``--change`` lines; only ``ENV`` and ``CMD`` are supported."""
    for line in changes:
        keyword, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        match keyword.upper():
            case "ENV":
                for key, value in _env_pairs(line, rest):
                    config = config.with_env(key, value)
            case "CMD":
                config = replace(config, cmd=_cmd(line, rest))
            case _:
                raise DockerfileError(f"unsupported change {keyword!r} (only ENV and CMD)", file="--change")
    return config


def _env_pairs(line: str, rest: str) -> list[tuple[str, str]]:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise DockerfileError(f"{line!r}: {exc}", file="--change") from exc
    if not words:
        raise DockerfileError("ENV needs at least one variable", file="--change")
    if "=" not in words[0]:  # legacy form: ENV key value with spaces
        key, _, value = rest.partition(" ")
        return [(key, value.strip())]
    pairs = [w.partition("=") for w in words]
    if any(not sep or not key for key, sep, _ in pairs):
        raise DockerfileError(f"{line!r}: expected KEY=VALUE", file="--change")
    return [(key, value) for key, _, value in pairs]


def _cmd(line: str, rest: str) -> tuple[str, ...]:
    if rest.startswith("["):
        try:
            words = json.loads(rest)
        except ValueError:
            words = None
        if isinstance(words, list) and all(isinstance(w, str) for w in words):
            return tuple(words)
    if not rest:
        raise DockerfileError(f"{line!r}: CMD needs a command", file="--change")
    return ("/bin/sh", "-c", rest)
