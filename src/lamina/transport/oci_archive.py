"""OCI image layout archives: what to write for a set of images, and what to load from one.

Both directions are pure over values: :func:`layout` lists the members of an
archive (inline JSON or store blobs to stream), :func:`plan` turns the
members an archive held into images to record. The tar itself is read and
written in :mod:`lamina.transport.archive`.

Names follow containerd's convention, which docker 25+, nerdctl and skopeo
read: ``io.containerd.image.name`` holds the full reference and
``org.opencontainers.image.ref.name`` the tag (what ``umoci --image DIR:TAG``
and ``skopeo oci-archive:FILE:TAG`` select by).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from lamina.errors import LaminaError, ReferenceError_
from lamina.model import model
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, decode
from lamina.oci.reference import Reference
from lamina.store.blobs import LAYOUT_FILE
from lamina.store.store import StoredImage
from lamina.transport.importer import Members, Planned, blob_name

IMAGE_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
_MAX_DEPTH = 8


@model
class Entry:
    """One archive member to write: inline ``data``, a store ``blob``, or (neither) a directory."""

    name: str
    data: bytes | None = None
    blob: Descriptor | None = None


@model
class Saved:
    """An image to save: the manifest bytes the store holds, and the names to save it under."""

    image: StoredImage
    manifest: bytes
    refs: tuple[Reference, ...] = ()


# -- writing ------------------------------------------------------------------------------

def layout(saved: Sequence[Saved], *, convert: bool = True) -> tuple[Entry, ...]:
    """The members of an OCI layout holding ``saved``: blobs (each once), ``index.json``, ``oci-layout``.

    With ``convert``, Docker schema 2 manifests are rewritten with OCI media
    types (same config and layer blobs, so a new manifest digest only).
    """
    blobs: dict[str, Entry] = {}
    descriptors: list[Descriptor] = []
    for item in saved:
        data = to_oci_manifest(item.manifest) if convert else item.manifest
        manifest = _manifest(data)
        for desc in (manifest.config, *manifest.layers):
            blobs.setdefault(blob_name(desc.digest), Entry(blob_name(desc.digest), blob=desc))
        digest = Digest.of(data)
        blobs.setdefault(blob_name(digest), Entry(blob_name(digest), data=data))
        descriptors.extend(index_descriptors(Descriptor(manifest.media_type, digest, len(data)), item.refs))
    index = Index(tuple(descriptors))
    return (Entry("blobs/"), Entry("blobs/sha256/"), *blobs.values(),
            Entry("index.json", index.encode()), Entry("oci-layout", LAYOUT_FILE.encode()))


def index_descriptors(desc: Descriptor, refs: Sequence[Reference]) -> list[Descriptor]:
    """One index entry per name (an image saved by ID gets one entry without names)."""
    if not refs:
        return [desc]
    return [replace(desc, annotations={IMAGE_NAME: str(ref), REF_NAME: ref.tag or "latest"}) for ref in refs]


_OCI_LAYER = {mt.DOCKER_FOREIGN_LAYER: mt.OCI_LAYER_NONDIST_GZIP}


def to_oci_manifest(data: bytes) -> bytes:
    """The OCI form of a manifest: the same blobs under OCI media types (OCI input is returned as is)."""
    manifest = _manifest(data)
    if manifest.media_type == mt.OCI_MANIFEST:
        return data
    layers = tuple(replace(d, media_type=_OCI_LAYER.get(d.media_type) or mt.to_oci(d.media_type))
                   for d in manifest.layers)
    config = replace(manifest.config, media_type=mt.OCI_CONFIG)
    return Manifest(config, layers, mt.OCI_MANIFEST, manifest.annotations).encode()


def _manifest(data: bytes) -> Manifest:
    manifest = decode(data)
    if not isinstance(manifest, Manifest):
        raise LaminaError("expected an image manifest, got an index")
    return manifest


# -- reading ------------------------------------------------------------------------------

def plan(members: Members, platform: Platform) -> list[Planned]:
    """The images an OCI layout's ``index.json`` names; nested indexes resolve to ``platform``.

    Entries naming the same manifest are merged into one image with all their names.
    """
    index = decode(members.file("index.json", "index"), mt.OCI_INDEX)
    if not isinstance(index, Index):
        raise LaminaError("archive: index.json is not an image index")
    plans: dict[Digest, Planned] = {}
    for desc in index.manifests:
        found, data = _pick(members, desc, platform, 0)
        ref = name_of(desc.annotations)
        refs = (ref,) if ref else ()
        if found.digest in plans:
            old = plans[found.digest]
            plans[found.digest] = replace(old, refs=old.refs + tuple(r for r in refs if r not in old.refs))
        else:
            plans[found.digest] = _planned(members, data, refs)
    return list(plans.values())


def _pick(members: Members, desc: Descriptor, platform: Platform, depth: int) -> tuple[Descriptor, bytes]:
    """Follow ``desc`` through nested indexes to one image manifest for ``platform``."""
    if depth > _MAX_DEPTH:
        raise LaminaError("archive: indexes nested too deeply")
    data = members.blob(desc, "manifest")
    parsed = decode(data, desc.media_type)
    if isinstance(parsed, Manifest):
        return desc, data
    matching = [d for d in parsed.manifests if d.platform is not None and platform.matches(d.platform)]
    if not matching and len(parsed.manifests) == 1 and parsed.manifests[0].platform is None:
        matching = list(parsed.manifests)
    if not matching:
        raise LaminaError(f"archive: index {desc.digest} has no manifest for platform {platform}")
    return _pick(members, matching[0], platform, depth + 1)


def _planned(members: Members, data: bytes, refs: tuple[Reference, ...]) -> Planned:
    manifest = _manifest(data)
    config = members.blob(manifest.config, "config")
    layers = tuple(members.layer_blob(d, f"layer {i}") for i, d in enumerate(manifest.layers))
    exact = data if all(layer.unchanged for layer in layers) else None
    return Planned(config, layers, manifest.media_type == mt.OCI_MANIFEST, refs, exact)


def name_of(annotations: Mapping[str, str]) -> Reference | None:
    """The reference an index entry names, if any: a bare tag (``latest``) names no repository,
    so containerd's full name is used then."""
    for key in (REF_NAME, IMAGE_NAME):
        text = annotations.get(key, "")
        if key == REF_NAME and "/" not in text and ":" not in text:
            continue
        try:
            ref = Reference.parse(text) if text else None
        except ReferenceError_:
            ref = None
        if ref is not None and ref.digest is None:
            return ref
    return None


def manifests_in(members: Members) -> list[bytes]:
    """Every manifest an ``index.json`` reaches, all platforms (to keep exact bytes); none if unreadable."""
    out: list[bytes] = []
    try:
        index = decode(members.file("index.json", "index"), mt.OCI_INDEX)
        pending = [(d, 0) for d in index.manifests] if isinstance(index, Index) else []
        while pending:
            desc, depth = pending.pop()
            data = members.blob(desc, "manifest")
            parsed = decode(data, desc.media_type)
            if isinstance(parsed, Manifest):
                out.append(data)
            elif depth < _MAX_DEPTH:
                pending.extend((d, depth + 1) for d in parsed.manifests)
    except LaminaError:
        pass  # an unusable index only costs the exact manifest bytes
    return out
