"""Image archives in and out of the store: ``docker-archive`` and ``oci-archive`` tars.

Both directions stream: :func:`save` copies blobs from the store into the tar
(verifying their digests on the way), and :func:`load` reads the tar once, in
whatever member order it comes (docker writes ``manifest.json`` last),
storing every layer-shaped member as it passes and keeping the small JSON
files in memory. Only then are the images planned, validated (sizes,
digests, diff_ids) and recorded, and only when all of them are valid is
anything tagged. Member names are lookup keys, never file system paths.

The layouts themselves are in :mod:`~lamina.transport.docker_archive` and
:mod:`~lamina.transport.oci_archive`; ``docker import`` is in
:mod:`~lamina.transport.importer`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO, Literal, cast

from lamina.errors import DigestMismatch, LaminaError, ReferenceError_, StoreError
from lamina.image.layerio import detect_compression, open_layer
from lamina.oci.descriptor import Platform
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage
from lamina.transport import docker_archive, oci_archive
from lamina.transport.importer import (
    CHUNK,
    Ingested,
    Members,
    Prefixed,
    commit,
    import_rootfs,
    ingest_layer,
    member_key,
    prepare,
)
from lamina.transport.oci_archive import Entry, Saved

__all__ = ["ArchiveFormat", "import_rootfs", "load", "save"]

ArchiveFormat = Literal["docker-archive", "oci-archive"]

MAX_FILE = 16 << 20  # a JSON member larger than this is not metadata
MAX_FILES_TOTAL = 256 << 20


def save(store: Store, names: Sequence[str], out: BinaryIO | Path, *,
         format: ArchiveFormat = "docker-archive") -> None:
    """Write the images ``names`` resolve to as one archive, streaming blobs from the store.

    A name that is a tag becomes a name in the archive; an image named by ID
    or digest is saved without one. ``out`` is not closed; a ``Path`` is
    written through a temp file and renamed, so no partial archive is left.
    """
    if format not in ("docker-archive", "oci-archive"):
        raise LaminaError(f"unknown archive format {format!r} (docker-archive or oci-archive)")
    saved = _select(store, names)
    entries = docker_archive.layout(saved) if format == "docker-archive" else oci_archive.layout(saved)
    with _output(out) as fileobj:
        _write_tar(store, entries, fileobj)


def _select(store: Store, names: Sequence[str]) -> list[Saved]:
    """Resolve names to images, in order, one entry per image with all its requested tags."""
    if not names:
        raise LaminaError("save: no images named")
    found: dict[Digest, tuple[StoredImage, list[Reference]]] = {}
    for name in names:
        image = store.resolve(name)
        _, refs = found.setdefault(image.manifest_digest, (image, []))
        ref = _tag_of(store, name, image)
        if ref is not None and ref not in refs:
            refs.append(ref)
    return [Saved(image, store.blobs.read(image.manifest_digest), tuple(refs)) for image, refs in found.values()]


def _tag_of(store: Store, name: str, image: StoredImage) -> Reference | None:
    try:
        ref = Reference.parse(name)
    except ReferenceError_:
        return None
    return ref if ref.digest is None and ref in store.tags_of(image.manifest_digest) else None


@contextlib.contextmanager
def _output(out: BinaryIO | Path) -> Iterator[IO[bytes]]:
    if not isinstance(out, Path):
        yield out
        return
    if out.exists() and not out.is_file():  # a device or pipe: cannot rename over it
        with open(out, "wb") as f:
            yield f
        return
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_tar(store: Store, entries: Sequence[Entry], out: IO[bytes]) -> None:
    """Stream ``entries`` as a tar: fixed owners, modes and times, so equal images give equal archives.

    Headers come from :mod:`tarfile`, but the data is copied here in large
    chunks: tarfile's stream writer re-buffers every write in 10 KiB records.
    """
    for entry in entries:
        info = tarfile.TarInfo(entry.name)
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
        if entry.data is not None:
            info.size = len(entry.data)
            out.write(info.tobuf(tarfile.PAX_FORMAT))
            out.write(entry.data)
        elif entry.blob is not None:
            info.size = entry.blob.size
            if store.blobs.size(entry.blob.digest) != entry.blob.size:
                raise DigestMismatch(f"blob {entry.blob.digest}: stored size differs from {entry.blob.size}")
            out.write(info.tobuf(tarfile.PAX_FORMAT))
            _copy_blob(store, entry.blob.digest, out)
        else:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            out.write(info.tobuf(tarfile.PAX_FORMAT))
        out.write(bytes(-info.size % tarfile.BLOCKSIZE))
    out.write(bytes(2 * tarfile.BLOCKSIZE))
    out.flush()


def _copy_blob(store: Store, digest: Digest, out: IO[bytes]) -> None:
    """Copy a blob, hashing it on the way: a corrupt store must not yield a plausible archive."""
    hasher = hashlib.sha256()
    with store.blobs.open(digest) as blob:
        while chunk := blob.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
    if Digest.from_hasher(hasher) != digest:
        raise DigestMismatch(f"blob {digest} in the store is corrupt")


# -- loading ----------------------------------------------------------------------------------

def load(store: Store, src: BinaryIO | Path) -> list[tuple[StoredImage, list[Reference]]]:
    """Load every image of a docker or OCI archive (the tar itself may be compressed).

    Returns each image with the names it was tagged with; an empty list means
    the archive gave it no usable name (an OCI ``ref.name`` that is only a
    tag), so it is stored untagged. Nothing is tagged unless every image in
    the archive is valid.
    """
    if isinstance(src, Path):
        with open(src, "rb") as f:
            return load(store, f)
    members = read_members(store, src)
    if "manifest.json" in members.files:
        plans = docker_archive.plan(members)
    elif "index.json" in members.files:
        plans = oci_archive.plan(members, Platform.host())
    else:
        raise LaminaError("archive has neither manifest.json (docker) nor index.json (OCI)")
    prepared = [(plan, prepare(plan)) for plan in plans]
    stored = [(commit(store, plan, *image), plan.refs) for plan, image in prepared]
    for image, refs in stored:
        for ref in refs:
            store.tag(ref, image.manifest_digest)
    return [(image, list(refs)) for image, refs in stored]


def read_members(store: Store, src: IO[bytes]) -> Members:
    """One pass over the tar: layer-shaped members into the store, small files into memory."""
    collected = _Collected()
    try:
        with tarfile.open(None, "r|", open_layer(cast(BinaryIO, src))) as tar:
            for info in tar:
                key = member_key(info.name)
                if info.issym():  # docker save links repeated layers: ../<id>/layer.tar
                    target = info.linkname if info.linkname.startswith("/") else f"{info.name}/../{info.linkname}"
                    collected.links[key] = member_key(target)
                elif info.islnk():
                    collected.links[key] = member_key(info.linkname)
                elif info.isreg():
                    stream = tar.extractfile(info)
                    assert stream is not None
                    collected.add(store, key, stream)
    except (tarfile.TarError, EOFError) as exc:
        raise LaminaError(f"reading archive: {exc}") from exc
    return Members(collected.files, collected.layers, collected.links)


class _Collected:
    """The mutable state of one pass; frozen into :class:`Members` at the end."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.layers: dict[str, Ingested] = {}
        self.links: dict[str, str] = {}
        self._total = 0

    def add(self, store: Store, key: str, stream: IO[bytes]) -> None:
        """Store a layer (compressed, or a tar by its header) or keep a small file (checked if named by digest)."""
        self.links.pop(key, None)
        self.files.pop(key, None)
        self.layers.pop(key, None)
        head = stream.read(512)
        expected = _named_digest(key)
        if detect_compression(head) != "none" or _is_tar_header(head):
            self.layers[key] = ingest_layer(store, Prefixed(stream, head), expected=expected)
            return
        data = head + stream.read(MAX_FILE + 1 - len(head))
        if len(data) > MAX_FILE:
            raise LaminaError(f"archive: member {key!r} is neither a layer nor a small JSON file")
        self._total += len(data)
        if self._total > MAX_FILES_TOTAL:
            raise LaminaError("archive: too much metadata")
        if expected is not None and Digest.of(data) != expected:
            raise DigestMismatch(f"archive: blob {expected}: content hashes to {Digest.of(data)}")
        self.files[key] = data


def _named_digest(key: str) -> Digest | None:
    """The digest a member of an OCI layout is named by (``blobs/sha256/<hex>``), if it is one."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        try:
            return Digest.parse(f"{parts[1]}:{parts[2]}")
        except LaminaError as exc:
            raise StoreError(f"archive: blob name {key!r} is not a digest") from exc
    return None


def _is_tar_header(block: bytes) -> bool:
    """Whether ``block`` starts a tar: an end-of-archive block or a header with a valid checksum."""
    if len(block) < 512:
        return False
    if block.count(0) == 512:
        return True
    try:
        stored = int(block[148:156].replace(b"\0", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    return stored == computed
