"""Image values and the functions that derive one image from another."""

from __future__ import annotations

import pytest

from lamina.image.image import (
    Image,
    Layer,
    add_history,
    append_layer,
    scratch,
    with_container_config,
    with_created,
)
from lamina.oci import mediatype as mt
from lamina.oci.config import ContainerConfig, History, ImageConfig
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest


def _layer(n: int, media_type: str = mt.DOCKER_LAYER_GZIP) -> Layer:
    return Layer(Descriptor(media_type, Digest.of(b"z%d" % n), 100 + n), Digest.of(b"t%d" % n))


CONFIG_DESC = Descriptor("whatever", Digest.of(b"{}"), 2)


@pytest.mark.parametrize(("platform", "expected"), [
    (Platform("linux", "amd64"), ("linux", "amd64", None)),
    (Platform("linux", "arm64", "v8"), ("linux", "arm64", "v8")),
])
def test_scratch(platform: Platform, expected: tuple[str, str, str | None]) -> None:
    image = scratch(platform)
    assert image.layers == () and image.config.diff_ids == () and image.config.history == ()
    assert (image.config.os, image.config.architecture, image.config.variant) == expected
    assert image.platform == platform


def test_scratch_defaults_to_host() -> None:
    assert scratch().platform == Platform.host()


def test_append_layer_and_history_keep_rootfs_and_history_in_step() -> None:
    base = scratch(Platform("linux", "amd64"))
    one = append_layer(base, _layer(1), History(created_by="COPY a /"))
    two = add_history(one, History(created_by="ENV A=1"))
    three = append_layer(two, _layer(2), History(created_by="RUN x", empty_layer=True))
    assert base.layers == ()  # unchanged
    assert three.layers == (_layer(1), _layer(2))
    assert three.config.diff_ids == (_layer(1).diff_id, _layer(2).diff_id)
    assert [(h.created_by, h.empty_layer) for h in three.config.history] == [
        ("COPY a /", False), ("ENV A=1", True), ("RUN x", True)]
    assert two.config.diff_ids == one.config.diff_ids


def test_add_history_forces_empty_layer() -> None:
    image = add_history(scratch(Platform("linux", "amd64")), History(created_by="CMD x", empty_layer=False))
    assert image.config.history == (History(created_by="CMD x", empty_layer=True),)


def test_layer_accessors() -> None:
    lay = _layer(3)
    assert (lay.digest, lay.size) == (Digest.of(b"z3"), 103)


# layer media type in the image, manifest flavour → layer media type in the manifest
MANIFEST_TYPES = [
    (mt.DOCKER_LAYER_GZIP, False, mt.DOCKER_LAYER_GZIP),
    (mt.DOCKER_LAYER_GZIP, True, mt.OCI_LAYER_GZIP),
    (mt.OCI_LAYER_GZIP, False, mt.DOCKER_LAYER_GZIP),
    (mt.OCI_LAYER, False, mt.DOCKER_LAYER),
    (mt.DOCKER_LAYER, True, mt.OCI_LAYER),
    (mt.OCI_LAYER_ZSTD, False, mt.OCI_LAYER_ZSTD),  # docker has no zstd type
    (mt.OCI_LAYER_ZSTD, True, mt.OCI_LAYER_ZSTD),
]


@pytest.mark.parametrize(("layer_type", "oci", "expected"), MANIFEST_TYPES)
def test_manifest_media_types(layer_type: str, oci: bool, expected: str) -> None:
    image = append_layer(scratch(Platform("linux", "amd64")), _layer(1, layer_type), History())
    manifest = image.manifest(CONFIG_DESC, oci=oci)
    assert manifest.media_type == (mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST)
    assert manifest.config == Descriptor(mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG, CONFIG_DESC.digest, 2)
    assert [d.media_type for d in manifest.layers] == [expected]
    assert [(d.digest, d.size) for d in manifest.layers] == [(image.layers[0].digest, 101)]


def test_manifest_keeps_layer_order() -> None:
    image = scratch(Platform("linux", "amd64"))
    for n in range(3):
        image = append_layer(image, _layer(n), History())
    assert [d.digest for d in image.manifest(CONFIG_DESC).layers] == [_layer(n).digest for n in range(3)]


def test_with_container_config_and_created() -> None:
    image = append_layer(scratch(Platform("linux", "amd64")), _layer(1), History())
    cfg = ContainerConfig(cmd=("sh",))
    changed = with_container_config(image, cfg)
    assert changed.config.config == cfg and changed.layers == image.layers
    dated = with_created(changed, "2024-01-01T00:00:00Z")
    assert (dated.config.created, dated.config.author) == ("2024-01-01T00:00:00Z", "")
    assert with_created(dated, None, "me").config.author == "me"
    assert with_created(dated, None, "me").config.created is None
    assert image.config.config == ContainerConfig()  # unchanged


def test_images_are_frozen() -> None:
    image = Image(ImageConfig())
    with pytest.raises(AttributeError):
        image.layers = ()  # type: ignore[misc]
