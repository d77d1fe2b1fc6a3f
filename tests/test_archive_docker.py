"""Unit tests for lamina.transport.docker_archive: manifest.json, repositories, plans (no I/O)."""

from __future__ import annotations

import json

import pytest

from lamina.errors import LaminaError
from lamina.image.image import Image
from lamina.oci import mediatype as mt
from lamina.oci.config import ImageConfig
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest
from lamina.oci.reference import Reference
from lamina.store.store import StoredImage
from lamina.transport.docker_archive import layout, manifest_json, plan, repositories_json
from lamina.transport.importer import Ingested, Members
from lamina.transport.oci_archive import Saved

CONFIG = b'{"rootfs":{"type":"layers","diff_ids":[]}}'
LAYERS = (Descriptor(mt.DOCKER_LAYER_GZIP, Digest.of(b"one"), 3), Descriptor(mt.DOCKER_LAYER_GZIP, Digest.of(b"two"), 3))
MANIFEST = Manifest(Descriptor(mt.DOCKER_CONFIG, Digest.of(CONFIG), len(CONFIG)), LAYERS)


def saved(*refs: str, manifest: Manifest = MANIFEST) -> Saved:
    data = manifest.encode()
    image = StoredImage(Digest.of(data), manifest, manifest.config.digest, Image(ImageConfig()))
    return Saved(image, data, tuple(Reference.parse(r) for r in refs))


def test_manifest_json_points_into_the_blobs() -> None:
    doc = json.loads(manifest_json([saved("busybox:latest", "127.0.0.1:5000/busybox:latest"), saved()]))
    assert doc[0] == {"Config": f"blobs/sha256/{Digest.of(CONFIG).hex}",
                      "RepoTags": ["busybox:latest", "127.0.0.1:5000/busybox:latest"],
                      "Layers": [f"blobs/sha256/{d.digest.hex}" for d in LAYERS]}
    assert doc[1]["RepoTags"] == []


def test_repositories_names_the_top_layer_of_tagged_images() -> None:
    empty = Manifest(MANIFEST.config, ())
    doc = json.loads(repositories_json([saved("a:v1", "a:v2", "docker.io/x/y:z"), saved("b:v1", manifest=empty)]))
    assert doc == {"a": {"v1": LAYERS[-1].digest.hex, "v2": LAYERS[-1].digest.hex}, "x/y": {"z": LAYERS[-1].digest.hex}}


def test_layout_is_an_oci_layout_plus_docker_files() -> None:
    names = [e.name for e in layout([saved("a:v1")])]
    assert names[-4:] == ["index.json", "oci-layout", "manifest.json", "repositories"]
    assert f"blobs/sha256/{Digest.of(MANIFEST.encode()).hex}" in names  # stored bytes, not converted


def _members(manifest_doc: object, *, with_index: bool = False) -> Members:
    files = {"manifest.json": json.dumps(manifest_doc).encode(), "c.json": CONFIG}
    layers = {f"l{i}.tar": Ingested(d.digest, d.size, d.digest, d.size, Digest.of(b"tar"), "gzip")
              for i, d in enumerate(LAYERS)}
    if with_index:
        data = MANIFEST.encode()
        files[f"blobs/sha256/{Digest.of(data).hex}"] = data
        files["index.json"] = Index((Descriptor(mt.DOCKER_MANIFEST, Digest.of(data), len(data)),)).encode()
    return Members(files, layers, {})


def test_plan_keeps_exact_manifest_bytes_when_the_archive_has_them() -> None:
    entry = {"Config": "c.json", "RepoTags": ["a:v1"], "Layers": ["l0.tar", "./l1.tar"]}
    (planned,) = plan(_members([entry], with_index=True))
    assert planned.manifest == MANIFEST.encode() and planned.refs == (Reference.parse("a:v1"),)
    (without,) = plan(_members([entry]))
    assert without.manifest is None
    (reordered,) = plan(_members([{**entry, "Layers": ["l1.tar", "l0.tar"]}], with_index=True))
    assert reordered.manifest is None


@pytest.mark.parametrize(("doc", "message"), [
    ([{"RepoTags": [], "Layers": []}], "Config must be"),
    ([{"Config": "c.json", "Layers": "l0.tar"}], "Layers is not a list"),
    ([{"Config": "c.json", "Layers": [], "RepoTags": "a:v1"}], "RepoTags is not a list"),
    ([{"Config": "c.json", "Layers": [7]}], "Layers must be"),
    ([["not", "an", "object"]], "not a list of objects"),
    ([{"Config": "c.json", "Layers": [], "RepoTags": ["a@sha256:" + "a" * 64]}], "is not a tag"),
])
def test_plan_rejects_malformed_manifest_json(doc: object, message: str) -> None:
    with pytest.raises(LaminaError, match=message):
        plan(_members(doc))
