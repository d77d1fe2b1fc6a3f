"""The OCI image and distribution specs as data: no files, no network.

Everything here is an immutable value with ``to_json``/``from_json`` (or
``encode``/``decode`` where exact bytes matter, since digests are of bytes).
"""

from lamina.oci import mediatype
from lamina.oci.config import ContainerConfig, Healthcheck, History, ImageConfig
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, decode, encode_json
from lamina.oci.reference import Reference

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
