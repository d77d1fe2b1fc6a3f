"""Immutable images: a config plus the layers it lists, and the functions that change them.

A change returns a new :class:`Image` (``append_layer``, ``add_history``,
``with_container_config``); nothing here does I/O. ``digest`` always means a
compressed blob, ``diff_id`` the uncompressed tar.
"""

from __future__ import annotations

from dataclasses import replace

from lamina.model import model
from lamina.oci import mediatype as mt
from lamina.oci.config import ContainerConfig, History, ImageConfig
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Manifest


@model
class Layer:
    desc: Descriptor
    diff_id: Digest

    @property
    def digest(self) -> Digest:
        return self.desc.digest

    @property
    def size(self) -> int:
        return self.desc.size


@model
class Image:
    config: ImageConfig
    layers: tuple[Layer, ...] = ()

    @property
    def platform(self) -> Platform:
        return Platform(self.config.os, self.config.architecture, self.config.variant)

    def manifest(self, config_desc: Descriptor, *, oci: bool = False) -> Manifest:
        """The manifest for this image once its config blob is ``config_desc``."""
        if oci:
            layers = tuple(replace(lay.desc, media_type=mt.to_oci(lay.desc.media_type)) for lay in self.layers)
            return Manifest(replace(config_desc, media_type=mt.OCI_CONFIG), layers, mt.OCI_MANIFEST)
        layers = tuple(replace(lay.desc, media_type=mt.to_docker(lay.desc.media_type)) for lay in self.layers)
        return Manifest(replace(config_desc, media_type=mt.DOCKER_CONFIG), layers, mt.DOCKER_MANIFEST)


def scratch(platform: Platform | None = None) -> Image:
    """The empty image ``FROM scratch`` starts from."""
    p = platform or Platform.host()
    return Image(ImageConfig(architecture=p.architecture, os=p.os, variant=p.variant))


def append_layer(image: Image, layer: Layer, history: History) -> Image:
    cfg = image.config
    return Image(
        replace(cfg, diff_ids=cfg.diff_ids + (layer.diff_id,), history=cfg.history + (history,)),
        image.layers + (layer,),
    )


def add_history(image: Image, history: History) -> Image:
    """Record an instruction that made no layer (``empty_layer`` is forced on)."""
    cfg = image.config
    return Image(replace(cfg, history=cfg.history + (replace(history, empty_layer=True),)), image.layers)


def with_container_config(image: Image, config: ContainerConfig) -> Image:
    return Image(replace(image.config, config=config), image.layers)


def with_created(image: Image, created: str | None, author: str | None = None) -> Image:
    cfg = replace(image.config, created=created)
    if author is not None:
        cfg = replace(cfg, author=author)
    return Image(cfg, image.layers)
