"""Platforms and descriptors: parsing, matching and their JSON form."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.errors import LaminaError
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest

D = Digest.of(b"hello")
DS = str(D)

PLATFORMS = [
    ("linux/amd64", Platform("linux", "amd64"), "linux/amd64"),
    ("linux/arm64/v8", Platform("linux", "arm64", "v8"), "linux/arm64/v8"),
    ("Linux/ARM/v7", Platform("linux", "arm", "v7"), "linux/arm/v7"),
    (" linux/386 ", Platform("linux", "386"), "linux/386"),
]

BAD_PLATFORMS = ["", "linux", "linux/", "/amd64", "linux//v7", "linux/arm/v7/x"]

# wanted, offered, matches
MATCHES = [
    (Platform("linux", "amd64"), Platform("linux", "amd64"), True),
    (Platform("linux", "arm64"), Platform("linux", "arm64", "v8"), True),
    (Platform("linux", "arm64", "v8"), Platform("linux", "arm64"), True),
    (Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6"), False),
    (Platform("linux", "amd64"), Platform("linux", "arm64"), False),
    (Platform("windows", "amd64"), Platform("linux", "amd64"), False),
]

PLATFORM_JSON = [
    (Platform("linux", "amd64"), {"architecture": "amd64", "os": "linux"}),
    (Platform("linux", "arm", "v7"), {"architecture": "arm", "os": "linux", "variant": "v7"}),
    (Platform("windows", "amd64", None, "10.0.17763.1"),
     {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1"}),
]

DESCRIPTOR_JSON: list[tuple[Descriptor, dict[str, Any]]] = [
    (Descriptor(mt.OCI_LAYER_GZIP, D, 5),
     {"mediaType": mt.OCI_LAYER_GZIP, "digest": DS, "size": 5}),
    (Descriptor(mt.OCI_MANIFEST, D, 0, {"org.opencontainers.image.ref.name": "v1"},
                Platform("linux", "arm64", "v8"), ("https://example.com/blob",)),
     {"mediaType": mt.OCI_MANIFEST, "digest": DS, "size": 0,
      "urls": ["https://example.com/blob"],
      "annotations": {"org.opencontainers.image.ref.name": "v1"},
      "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}),
]

BAD_DESCRIPTORS: list[Any] = [
    {"mediaType": mt.OCI_LAYER, "size": 1},  # no digest
    {"mediaType": mt.OCI_LAYER, "digest": DS},  # no size
    {"mediaType": mt.OCI_LAYER, "digest": DS, "size": -1},
    {"mediaType": mt.OCI_LAYER, "digest": DS, "size": "many"},
    {"mediaType": mt.OCI_LAYER, "digest": DS, "size": None},
    {"mediaType": mt.OCI_LAYER, "digest": "sha256:abc", "size": 1},
    [],
    "not an object",
]


@pytest.mark.parametrize(("text", "expected", "printed"), PLATFORMS)
def test_platform_parse(text: str, expected: Platform, printed: str) -> None:
    assert Platform.parse(text) == expected
    assert str(expected) == printed


@pytest.mark.parametrize("text", BAD_PLATFORMS)
def test_platform_parse_invalid(text: str) -> None:
    with pytest.raises(LaminaError, match="invalid platform"):
        Platform.parse(text)


@pytest.mark.parametrize(("wanted", "offered", "expected"), MATCHES)
def test_platform_matches(wanted: Platform, offered: Platform, expected: bool) -> None:
    assert wanted.matches(offered) is expected


@pytest.mark.parametrize(("platform", "doc"), PLATFORM_JSON)
def test_platform_json(platform: Platform, doc: dict[str, Any]) -> None:
    assert platform.to_json() == doc
    assert Platform.from_json(doc) == platform


def test_platform_host_is_linux() -> None:
    host = Platform.host()
    assert host.os == "linux" and host.architecture
    assert host.variant == ("v8" if host.architecture == "arm64" else None)


@pytest.mark.parametrize(("desc", "doc"), DESCRIPTOR_JSON)
def test_descriptor_json(desc: Descriptor, doc: dict[str, Any]) -> None:
    assert desc.to_json() == doc
    assert list(desc.to_json()) == list(doc)  # key order is part of the encoded bytes
    assert Descriptor.from_json(doc) == desc


@pytest.mark.parametrize("doc", BAD_DESCRIPTORS)
def test_descriptor_malformed(doc: Any) -> None:
    with pytest.raises(LaminaError):
        Descriptor.from_json(doc)


def test_descriptor_missing_media_type_is_empty() -> None:
    assert Descriptor.from_json({"digest": DS, "size": 3}).media_type == ""
