"""Unit tests for lamina.transport.oci_archive: layouts, names, manifest conversion (no I/O)."""

from __future__ import annotations

import json

import pytest

from lamina.errors import LaminaError
from lamina.image.image import Image, Layer
from lamina.oci import mediatype as mt
from lamina.oci.config import ImageConfig
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest
from lamina.oci.reference import Reference
from lamina.store.store import StoredImage
from lamina.transport.importer import Ingested, Members
from lamina.transport.oci_archive import (
    Saved,
    index_descriptors,
    layout,
    manifests_in,
    name_of,
    plan,
    to_oci_manifest,
)

CONFIG = b'{"rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = Descriptor(mt.DOCKER_LAYER_GZIP, Digest.of(b"layer"), 5)
DOCKER = Manifest(Descriptor(mt.DOCKER_CONFIG, Digest.of(CONFIG), len(CONFIG)), (LAYER,))


def saved(manifest: Manifest, *refs: str) -> Saved:
    data = manifest.encode()
    image = StoredImage(Digest.of(data), manifest, manifest.config.digest,
                        Image(ImageConfig(), (Layer(LAYER, Digest.of(b"tar")),)))
    return Saved(image, data, tuple(Reference.parse(r) for r in refs))


def test_to_oci_manifest_keeps_blobs_and_changes_types() -> None:
    foreign = Descriptor(mt.DOCKER_FOREIGN_LAYER, Digest.of(b"f"), 1, urls=("https://x",))
    docker = Manifest(DOCKER.config, (LAYER, foreign), annotations={"a": "b"})
    converted = json.loads(to_oci_manifest(docker.encode()))
    assert converted["mediaType"] == mt.OCI_MANIFEST
    assert converted["config"] == {"mediaType": mt.OCI_CONFIG, "digest": str(Digest.of(CONFIG)), "size": len(CONFIG)}
    assert [(d["mediaType"], d["digest"]) for d in converted["layers"]] == [
        (mt.OCI_LAYER_GZIP, str(LAYER.digest)), (mt.OCI_LAYER_NONDIST_GZIP, str(foreign.digest))]
    assert converted["annotations"] == {"a": "b"}
    oci = to_oci_manifest(docker.encode())
    assert to_oci_manifest(oci) is oci


@pytest.mark.parametrize(("annotations", "expected"), [
    ({"io.containerd.image.name": "docker.io/library/busybox:latest",
      "org.opencontainers.image.ref.name": "latest"}, "docker.io/library/busybox:latest"),
    ({"org.opencontainers.image.ref.name": "latest"}, None),
    ({"org.opencontainers.image.ref.name": "busybox"}, None),
    ({"org.opencontainers.image.ref.name": "busybox:1.36"}, "docker.io/library/busybox:1.36"),
    ({"org.opencontainers.image.ref.name": "localhost:5000/app"}, "localhost:5000/app:latest"),
    ({"org.opencontainers.image.ref.name": "Not A Ref:x"}, None),
    ({"io.containerd.image.name": "app@sha256:" + "a" * 64}, None),
    ({"io.containerd.image.name": "example.com/full:v1",
      "org.opencontainers.image.ref.name": "example.com/other:v2"}, "example.com/other:v2"),
    ({}, None),
])
def test_name_of(annotations: dict[str, str], expected: str | None) -> None:
    ref = name_of(annotations)
    assert (str(ref) if ref else None) == expected


def test_index_descriptors_one_per_name() -> None:
    desc = Descriptor(mt.OCI_MANIFEST, Digest.of(b"m"), 1)
    assert index_descriptors(desc, []) == [desc]
    named = index_descriptors(desc, [Reference.parse("busybox"), Reference.parse("example.com/a/b:v1")])
    assert [d.annotations for d in named] == [
        {"io.containerd.image.name": "docker.io/library/busybox:latest", "org.opencontainers.image.ref.name": "latest"},
        {"io.containerd.image.name": "example.com/a/b:v1", "org.opencontainers.image.ref.name": "v1"}]


def test_layout_lists_each_blob_once() -> None:
    first, second = saved(DOCKER, "a:v1", "a:v2"), saved(DOCKER, "b:v1")
    entries = layout([first, second])
    names = [e.name for e in entries]
    assert names[:2] == ["blobs/", "blobs/sha256/"] and names[-2:] == ["index.json", "oci-layout"]
    assert len(names) == len(set(names)) == 2 + 3 + 2  # config, layer, one converted manifest
    index = json.loads(entries[-2].data or b"")
    assert [d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]] == ["v1", "v2", "v1"]
    assert {d["mediaType"] for d in index["manifests"]} == {mt.OCI_MANIFEST}
    kept = layout([first], convert=False)
    assert json.loads(kept[-2].data or b"")["manifests"][0]["digest"] == str(first.image.manifest_digest)


def _members(blobs: list[bytes], index: Index) -> Members:
    files = {f"blobs/sha256/{Digest.of(b).hex}": b for b in blobs}
    files["index.json"] = index.encode()
    layer = Ingested(LAYER.digest, LAYER.size, LAYER.digest, LAYER.size, Digest.of(b"tar"), "gzip")
    return Members(files, {f"blobs/sha256/{LAYER.digest.hex}": layer}, {})


def test_plan_merges_names_of_one_manifest_and_rejects_foreign_platforms() -> None:
    data = DOCKER.encode()
    desc = Descriptor(mt.DOCKER_MANIFEST, Digest.of(data), len(data))
    index = Index(tuple(index_descriptors(desc, [Reference.parse("a:v1"), Reference.parse("a:v2")])))
    (planned,) = plan(_members([CONFIG, data], index), Platform.host())
    assert [str(r) for r in planned.refs] == ["docker.io/library/a:v1", "docker.io/library/a:v2"]
    assert planned.manifest == data and not planned.oci
    inner = Index((Descriptor(mt.DOCKER_MANIFEST, desc.digest, desc.size, platform=Platform("plan9", "mips")),))
    nested = Descriptor(mt.OCI_INDEX, Digest.of(inner.encode()), len(inner.encode()))
    with pytest.raises(LaminaError, match="no manifest for platform"):
        plan(_members([CONFIG, data, inner.encode()], Index((nested,))), Platform.host())
    assert manifests_in(_members([CONFIG, data, inner.encode()], Index((nested,)))) == [data]
