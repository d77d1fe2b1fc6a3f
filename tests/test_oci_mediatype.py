"""Media types: compression implied by a layer type, and the Docker ⇄ OCI pairing."""

from __future__ import annotations

import pytest

from lamina.oci import mediatype as mt

COMPRESSION = [
    (mt.OCI_LAYER, "none"),
    (mt.DOCKER_LAYER, "none"),
    (mt.OCI_LAYER_GZIP, "gzip"),
    (mt.OCI_LAYER_NONDIST_GZIP, "gzip"),
    (mt.DOCKER_LAYER_GZIP, "gzip"),
    (mt.DOCKER_FOREIGN_LAYER, "gzip"),
    (mt.OCI_LAYER_ZSTD, "zstd"),
    ("application/x-unknown", "gzip"),
]

LAYER_TYPE = [
    (True, "none", mt.OCI_LAYER),
    (True, "gzip", mt.OCI_LAYER_GZIP),
    (True, "zstd", mt.OCI_LAYER_ZSTD),
    (False, "none", mt.DOCKER_LAYER),
    (False, "gzip", mt.DOCKER_LAYER_GZIP),
    (False, "zstd", mt.OCI_LAYER_ZSTD),  # schema 2 has no zstd type; docker uses OCI's
]

# Docker type, OCI type: both directions map one to the other.
PAIRS = [
    (mt.DOCKER_MANIFEST, mt.OCI_MANIFEST),
    (mt.DOCKER_MANIFEST_LIST, mt.OCI_INDEX),
    (mt.DOCKER_CONFIG, mt.OCI_CONFIG),
    (mt.DOCKER_LAYER_GZIP, mt.OCI_LAYER_GZIP),
    (mt.DOCKER_LAYER, mt.OCI_LAYER),
]

UNPAIRED = [mt.OCI_LAYER_ZSTD, mt.OCI_LAYER_NONDIST_GZIP, mt.DOCKER_FOREIGN_LAYER, "text/plain"]

GOLDEN = {
    mt.OCI_MANIFEST: "application/vnd.oci.image.manifest.v1+json",
    mt.OCI_INDEX: "application/vnd.oci.image.index.v1+json",
    mt.OCI_CONFIG: "application/vnd.oci.image.config.v1+json",
    mt.OCI_LAYER_GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    mt.DOCKER_MANIFEST: "application/vnd.docker.distribution.manifest.v2+json",
    mt.DOCKER_MANIFEST_LIST: "application/vnd.docker.distribution.manifest.list.v2+json",
    mt.DOCKER_CONFIG: "application/vnd.docker.container.image.v1+json",
    mt.DOCKER_LAYER_GZIP: "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


@pytest.mark.parametrize(("value", "expected"), GOLDEN.items())
def test_spelling(value: str, expected: str) -> None:
    assert value == expected


@pytest.mark.parametrize(("media_type", "expected"), COMPRESSION)
def test_layer_compression(media_type: str, expected: str) -> None:
    assert mt.layer_compression(media_type) == expected


@pytest.mark.parametrize(("oci", "compression", "expected"), LAYER_TYPE)
def test_layer_type(oci: bool, compression: str, expected: str) -> None:
    assert mt.layer_type(oci, compression) == expected
    assert mt.layer_compression(expected) == compression


@pytest.mark.parametrize(("docker", "oci"), PAIRS)
def test_pairs(docker: str, oci: str) -> None:
    assert mt.to_oci(docker) == oci
    assert mt.to_docker(oci) == docker
    assert mt.to_oci(oci) == oci
    assert mt.to_docker(docker) == docker


@pytest.mark.parametrize("media_type", UNPAIRED)
def test_unpaired_unchanged(media_type: str) -> None:
    assert mt.to_oci(media_type) == media_type
    assert mt.to_docker(media_type) == media_type


def test_sets() -> None:
    assert {mt.OCI_MANIFEST, mt.DOCKER_MANIFEST} == mt.MANIFESTS
    assert {mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST} == mt.INDEXES
    assert not mt.MANIFESTS & mt.INDEXES
