"""Image manifests and indexes (OCI and Docker schema 2), encoded and decoded.

A manifest's digest is of the exact bytes sent or stored, so ``encode`` is
deterministic and callers keep the bytes they hashed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from lamina.errors import LaminaError
from lamina.model import model
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor


@model
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = mt.DOCKER_MANIFEST
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [d.to_json() for d in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def encode(self) -> bytes:
        return encode_json(self.to_json())


@model
class Index:
    manifests: tuple[Descriptor, ...]
    media_type: str = mt.OCI_INDEX
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [d.to_json() for d in self.manifests],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def encode(self) -> bytes:
        return encode_json(self.to_json())


def encode_json(data: Any) -> bytes:
    """Compact JSON with a stable key order, as Go's encoder writes it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or index; the media type comes from the body, else the header."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LaminaError(f"malformed manifest: {exc}") from exc
    if not isinstance(doc, dict):
        raise LaminaError("malformed manifest: not a JSON object")
    kind = doc.get("mediaType") or media_type or ""
    if not kind:  # OCI allows omitting mediaType: tell by shape
        kind = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if doc.get("schemaVersion") != 2:
        raise LaminaError(f"unsupported manifest schema version {doc.get('schemaVersion')!r}")
    try:
        if kind in mt.INDEXES:
            return Index(tuple(Descriptor.from_json(d) for d in doc.get("manifests") or ()),
                         kind, dict(doc.get("annotations") or {}))
        if kind in mt.MANIFESTS:
            return Manifest(Descriptor.from_json(doc["config"]),
                            tuple(Descriptor.from_json(d) for d in doc.get("layers") or ()),
                            kind, dict(doc.get("annotations") or {}))
    except (KeyError, TypeError, AttributeError) as exc:
        raise LaminaError(f"malformed manifest: missing {exc}") from exc
    raise LaminaError(f"unsupported manifest media type {kind!r}")
