"""Docker archives (``docker save``/``docker load``): what to write, and what to load from one.

We write the layout docker 25+ writes: an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/...``) that ``manifest.json`` and
``repositories`` also point into. Docker 20.10 reads only ``manifest.json``
(config and layer files by path, layers plain or compressed), docker 25+ and
containerd read the OCI part, and the stored manifest travels unchanged, so a
save/load round trip keeps the manifest digest. Layers are the store's
compressed blobs: nothing is recompressed on save.

On load both layouts are understood: the new one and the old
``<id>/layer.tar`` one (``docker save`` before 25), with plain or compressed
layer files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lamina.errors import LaminaError
from lamina.oci.digest import Digest
from lamina.oci.manifest import encode_json
from lamina.oci.reference import Reference
from lamina.transport.importer import Ingested, Members, Planned, blob_name
from lamina.transport.oci_archive import Entry, Saved, manifests_in
from lamina.transport.oci_archive import layout as oci_layout


def layout(saved: Sequence[Saved]) -> tuple[Entry, ...]:
    """The members of a docker archive holding ``saved`` (an OCI layout plus docker's two files)."""
    return (*oci_layout(saved, convert=False),
            Entry("manifest.json", manifest_json(saved)),
            Entry("repositories", repositories_json(saved)))


def manifest_json(saved: Sequence[Saved]) -> bytes:
    entries = [{"Config": blob_name(item.image.config_digest),
                "RepoTags": [ref.familiar for ref in item.refs],
                "Layers": [blob_name(d.digest) for d in item.image.manifest.layers]}
               for item in saved]
    return encode_json(entries)


def repositories_json(saved: Sequence[Saved]) -> bytes:
    """The legacy ``repository → tag → top layer`` map (read only by loaders without manifest.json)."""
    repos: dict[str, dict[str, str]] = {}
    for item in saved:
        layers = item.image.manifest.layers
        for ref in item.refs:
            if layers and ref.tag:
                repos.setdefault(ref.familiar_repository, {})[ref.tag] = layers[-1].digest.hex
    return encode_json(repos)


def plan(members: Members) -> list[Planned]:
    """The images ``manifest.json`` lists, named by their ``RepoTags``.

    When the archive also carries an OCI layout whose manifest names exactly
    these blobs, its bytes are kept (same manifest digest as the saved image).
    """
    exact = manifests_in(members)
    plans = []
    for i, entry in enumerate(_entries(members.file("manifest.json", "manifest"))):
        config = members.file(_string(entry.get("Config"), "Config"), f"config of image {i}")
        layer_names = entry.get("Layers") or []
        if not isinstance(layer_names, list):
            raise LaminaError(f"archive: manifest.json image {i}: Layers is not a list")
        layers = tuple(members.layer(_string(name, "Layers"), f"layer {n} of image {i}")
                       for n, name in enumerate(layer_names))
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list):
            raise LaminaError(f"archive: manifest.json image {i}: RepoTags is not a list")
        refs = tuple(_tag(_string(tag, "RepoTags")) for tag in tags)
        plans.append(Planned(config, layers, False, refs, _matching(exact, config, layers)))
    return plans


def _matching(manifests: list[bytes], config: bytes, layers: Sequence[Ingested]) -> bytes | None:
    """A manifest naming this config and exactly these stored layer blobs, if the archive has one."""
    want = (str(Digest.of(config)), [str(layer.digest) for layer in layers])
    for data in manifests:
        doc = json.loads(data)
        got = (doc.get("config", {}).get("digest"), [d.get("digest") for d in doc.get("layers") or ()])
        if got == want:
            return data
    return None


def _tag(text: str) -> Reference:
    ref = Reference.parse(text)
    if ref.digest is not None:  # as docker load: a name in RepoTags must be name:tag
        raise LaminaError(f"archive: RepoTags entry {text!r} is not a tag")
    return ref


def _entries(data: bytes) -> list[dict[str, Any]]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LaminaError(f"archive: malformed manifest.json: {exc}") from exc
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise LaminaError("archive: manifest.json is not a list of objects")
    if not doc:
        raise LaminaError("archive: manifest.json lists no images")
    return doc


def _string(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise LaminaError(f"archive: manifest.json: {field} must be a non-empty string")
    return value
