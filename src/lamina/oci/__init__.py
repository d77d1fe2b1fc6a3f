"""The OCI image and distribution specs as data: no files, no network.

Everything here is an immutable value with ``to_json``/``from_json`` (or
``encode``/``decode`` where exact bytes matter, since digests are of bytes).
The names below load on first use: a command that needs a digest or a
reference does not pay for defining the image config's classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina.oci import mediatype
    from lamina.oci.config import ContainerConfig, Healthcheck, History, ImageConfig
    from lamina.oci.descriptor import Descriptor, Platform
    from lamina.oci.digest import Digest
    from lamina.oci.manifest import Index, Manifest, decode, encode_json
    from lamina.oci.reference import Reference

_WHERE = {
    "ContainerConfig": "config", "Healthcheck": "config", "History": "config", "ImageConfig": "config",
    "Descriptor": "descriptor", "Platform": "descriptor", "Digest": "digest",
    "Index": "manifest", "Manifest": "manifest", "decode": "manifest", "encode_json": "manifest",
    "Reference": "reference",
}


def __getattr__(name: str) -> Any:
    if name == "mediatype":
        return importlib.import_module("lamina.oci.mediatype")
    if name in _WHERE:
        return getattr(importlib.import_module(f"lamina.oci.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'lamina.oci' has no attribute {name!r}")


__all__ = [
    "ContainerConfig",
    "Descriptor",
    "Digest",
    "Healthcheck",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "Reference",
    "decode",
    "encode_json",
    "mediatype",
]
