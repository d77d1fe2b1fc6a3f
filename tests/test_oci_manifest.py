"""Manifests and indexes: golden encodings and decoding of each flavour."""

from __future__ import annotations

import json

import pytest

from lamina.errors import LaminaError
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, decode, encode_json

CFG = Digest.of(b"config")
L1 = Digest.of(b"layer1")
L2 = Digest.of(b"layer2")

DOCKER = Manifest(Descriptor(mt.DOCKER_CONFIG, CFG, 100),
                  (Descriptor(mt.DOCKER_LAYER_GZIP, L1, 10), Descriptor(mt.DOCKER_LAYER_GZIP, L2, 20)))
DOCKER_BYTES = (
    '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
    f'"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{CFG}","size":100}},'
    f'"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{L1}","size":10}},'
    f'{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{L2}","size":20}}]}}'
).encode()

OCI = Manifest(Descriptor(mt.OCI_CONFIG, CFG, 100), (), mt.OCI_MANIFEST, {"org.example": "ü"})
OCI_BYTES = (
    '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    f'"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CFG}","size":100}},'
    '"layers":[],"annotations":{"org.example":"ü"}}'
).encode()

INDEX = Index((Descriptor(mt.OCI_MANIFEST, L1, 300, platform=Platform("linux", "amd64")),
               Descriptor(mt.OCI_MANIFEST, L2, 301, platform=Platform("linux", "arm64", "v8"))))
INDEX_BYTES = (
    '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":['
    f'{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{L1}","size":300,'
    '"platform":{"architecture":"amd64","os":"linux"}},'
    f'{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{L2}","size":301,'
    '"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}'
).encode()


@pytest.mark.parametrize(("value", "golden"), [(DOCKER, DOCKER_BYTES), (OCI, OCI_BYTES), (INDEX, INDEX_BYTES)],
                         ids=["docker", "oci", "index"])
def test_encode_golden_and_round_trip(value: Manifest | Index, golden: bytes) -> None:
    assert value.encode() == golden
    assert decode(golden) == value
    assert decode(golden).encode() == golden


def _doc(**changes: object) -> bytes:
    doc = json.loads(DOCKER_BYTES)
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


# body, header media type, expected type and media type
DECODE = [
    (_doc(mediaType=None), mt.DOCKER_MANIFEST, Manifest, mt.DOCKER_MANIFEST),  # header names it
    (_doc(mediaType=None), None, Manifest, mt.OCI_MANIFEST),  # OCI may omit it: tell by shape
    (_doc(mediaType=mt.OCI_MANIFEST), mt.DOCKER_MANIFEST, Manifest, mt.OCI_MANIFEST),  # body wins
    (b'{"schemaVersion":2,"manifests":[]}', None, Index, mt.OCI_INDEX),
    (json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": []}).encode(), None,
     Index, mt.DOCKER_MANIFEST_LIST),
    (_doc(layers=[]), None, Manifest, mt.DOCKER_MANIFEST),
]


@pytest.mark.parametrize(("body", "header", "kind", "media_type"), DECODE)
def test_decode_kinds(body: bytes, header: str | None, kind: type, media_type: str) -> None:
    parsed = decode(body, header)
    assert isinstance(parsed, kind)
    assert parsed.media_type == media_type


BAD = [
    (b"", "malformed manifest"),
    (b"\xff\xfe", "malformed manifest"),
    (b"[]", "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (_doc(schemaVersion=1), "schema version 1"),
    (_doc(schemaVersion=None), "schema version None"),
    (_doc(mediaType="application/vnd.docker.distribution.manifest.v1+prettyjws"), "unsupported manifest media"),
    (_doc(config=None), "malformed manifest"),
    (_doc(config="sha256:x"), "malformed"),
    (_doc(layers=[{"mediaType": mt.DOCKER_LAYER, "size": 1}]), "malformed descriptor"),
    (_doc(layers=[{"mediaType": mt.DOCKER_LAYER, "digest": str(L1), "size": -5}]), "malformed descriptor"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_decode_malformed(body: bytes, message: str) -> None:
    with pytest.raises(LaminaError, match=message):
        decode(body)


ENCODE_JSON = [
    ({}, b"{}"),
    ({"b": 1, "a": [1, 2]}, b'{"b":1,"a":[1,2]}'),  # insertion order kept, compact separators
    ({"s": "é"}, '{"s":"é"}'.encode()),  # UTF-8, not \\u escapes
]


@pytest.mark.parametrize(("data", "expected"), ENCODE_JSON)
def test_encode_json(data: object, expected: bytes) -> None:
    assert encode_json(data) == expected
