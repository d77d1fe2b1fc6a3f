"""The build cache outside the store: exported to, and imported from, a registry or a directory.

``--cache-to``/``--cache-from`` as BuildKit spells them. An exported cache is
one OCI image manifest:

- its config blob (media type :data:`CACHE_CONFIG`) is canonical JSON
  ``{"version": 1, "records": {KEY: RECORD}}``, the store's own cache records
  (``created``, and ``layer`` for steps that made one);
- its layers are the layer blobs those records name, so a registry keeps them
  alive and ``push``'s blob checks, mounts and uploads apply unchanged.

It goes to a registry tag (``type=registry,ref=R``) or into an OCI image
layout directory (``type=local,dest=DIR``, ``index.json`` naming it).

Importing reads the manifest and config at build start, nothing more: a
cache may hold every stage of many builds (``mode=max``), and a build needs
only the layers of the steps that hit. Those are fetched one by one, the
first time a hit asks for them (:meth:`ImportedCache.fetch`), verified
against their digest like any pulled blob. Keys are content-derived
(:mod:`lamina.build.cachekey`), so a record made on another machine hits
exactly when the step's inputs are the same.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.errors import BuildError, LaminaError, StoreError
from lamina.image.image import Image
from lamina.model import model
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, decode
from lamina.oci.reference import Reference
from lamina.store.store import Store

if TYPE_CHECKING:
    from lamina.transport.registry.client import RegistryClient

CACHE_CONFIG = "application/vnd.lamina.cache.config.v1+json"
CACHE_VERSION = 1
_REF_NAME = "org.opencontainers.image.ref.name"
# BuildKit attributes that mean nothing here (our format has one flavour); accepted so shared
# CI scripts keep working
_IGNORED = frozenset({"compression", "compression-level", "force-compression", "oci-mediatypes",
                      "image-manifest", "ignore-error", "tag", "digest"})

Records = Mapping[str, Mapping[str, Any]]


@model
class CacheSpec:
    """One ``--cache-to``/``--cache-from`` value: where, and for export how much."""

    type: str                 # "registry" | "local"
    location: str             # a reference, or a directory
    mode: str = "min"         # "min": the target's chain; "max": every stage's steps

    def __str__(self) -> str:
        return f"{self.type}:{self.location}"


def parse_cache_spec(text: str, *, export: bool) -> CacheSpec:
    """``type=registry,ref=R[,mode=max]`` / ``type=local,dest|src=DIR``; a bare ``R`` is a registry ref."""
    flag = "--cache-to" if export else "--cache-from"
    if "=" not in text:
        return CacheSpec("registry", _ref(text, flag))
    attrs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise BuildError(f"{flag} {text!r}: expected KEY=VALUE, got {part!r}")
        attrs[key.strip().lower()] = value.strip()
    kind = attrs.pop("type", "registry")
    mode = attrs.pop("mode", "min")
    if mode not in ("min", "max"):
        raise BuildError(f"{flag} {text!r}: mode must be min or max")
    if kind == "registry":
        location = _ref(attrs.pop("ref", ""), flag)
    elif kind == "local":
        location = attrs.pop("dest" if export else "src", "")
        if not location:
            raise BuildError(f"{flag} {text!r}: type=local needs {'dest' if export else 'src'}=DIR")
    else:
        raise BuildError(f"{flag} {text!r}: unsupported cache type {kind!r} (registry, local)")
    unknown = sorted(set(attrs) - _IGNORED)
    if unknown:
        raise BuildError(f"{flag} {text!r}: unknown attribute {unknown[0]!r}")
    return CacheSpec(kind, location, mode)


def _ref(text: str, flag: str) -> str:
    if not text:
        raise BuildError(f"{flag}: type=registry needs ref=NAME[:TAG]")
    return str(Reference.parse(text))


# --- the format (pure) -------------------------------------------------------------------


def encode_cache(records: Records) -> tuple[bytes, tuple[Descriptor, ...]]:
    """The config blob for ``records`` and the layer descriptors it names (first use first)."""
    layers: dict[str, Descriptor] = {}
    for record in records.values():
        info = record.get("layer")
        if info and info["digest"] not in layers:
            layers[info["digest"]] = Descriptor(str(info["media_type"]), Digest.parse(info["digest"]),
                                                int(info["size"]))
    doc = {"version": CACHE_VERSION, "records": {k: dict(v) for k, v in records.items()}}
    config = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return config, tuple(layers.values())


def cache_manifest(config: bytes, layers: tuple[Descriptor, ...]) -> Manifest:
    return Manifest(Descriptor(CACHE_CONFIG, Digest.of(config), len(config)), layers, mt.OCI_MANIFEST)


def decode_cache_config(data: bytes) -> dict[str, dict[str, Any]]:
    """The records of a cache config blob; a malformed one is an error naming what is wrong."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
            raise ValueError(f"unsupported cache version {doc.get('version') if isinstance(doc, dict) else '?'}")
        records = doc["records"]
        if not isinstance(records, dict) or not all(isinstance(v, dict) for v in records.values()):
            raise ValueError("records must be an object of objects")
        return {str(k): v for k, v in records.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise LaminaError(f"malformed cache config: {exc}") from exc


def _check_manifest(data: bytes, what: str) -> Manifest:
    try:
        parsed = decode(data)
    except LaminaError as exc:
        raise LaminaError(f"{what}: {exc}") from exc
    if isinstance(parsed, Index) or parsed.config.media_type != CACHE_CONFIG:
        raise LaminaError(f"{what}: not a lamina build cache (config type {_config_type(parsed)})")
    return parsed


def _config_type(parsed: Manifest | Index) -> str:
    return "index" if isinstance(parsed, Index) else parsed.config.media_type


def select_records(records: Records, image: Image, mode: str) -> dict[str, Mapping[str, Any]]:
    """The records to export: all of them for ``mode=max``; for ``min``, those behind ``image``.

    A record is behind the image when its layer is one of the image's, or (a
    metadata step) its time is one of the image's history times: exactly the
    steps of the target's chain, plus at worst a twin from another stage.
    """
    if mode == "max":
        return dict(records)
    layers = {str(layer.digest) for layer in image.layers}
    times = {h.created for h in image.config.history if h.created}
    return {k: v for k, v in records.items()
            if (v["layer"]["digest"] in layers if v.get("layer") else v.get("created") in times)}


# --- export ----------------------------------------------------------------------------------


def export_cache(store: Store, spec: CacheSpec, records: Records) -> Digest:
    """Write ``records`` and their layers to ``spec``'s place; the cache manifest's digest.

    Records whose layer blob is not in the store are left out (they could not be used).
    """
    kept = {k: v for k, v in records.items()
            if not v.get("layer") or store.blobs.has(Digest.parse(v["layer"]["digest"]))}
    config, layers = encode_cache(kept)
    manifest = cache_manifest(config, layers)
    data = manifest.encode()
    store.blobs.put(config)
    digest = store.blobs.put(data)
    try:
        if spec.type == "registry":
            _push(store, Reference.parse(spec.location), manifest, digest)
        else:
            _write_layout(store, Path(spec.location), manifest, digest, len(data))
    except LaminaError as exc:
        raise BuildError(f"exporting cache to {spec}: {exc}") from exc
    return digest


def _push(store: Store, ref: Reference, manifest: Manifest, digest: Digest) -> None:
    # push() sends what a StoredImage's manifest names; a cache manifest has the same shape
    from lamina.image.image import scratch
    from lamina.store.store import StoredImage
    from lamina.transport.mirrors import registry_client
    from lamina.transport.registry.push import push

    with registry_client(ref.domain) as client:
        push(store, StoredImage(digest, manifest, manifest.config.digest, scratch()), ref, client=client)


def _write_layout(store: Store, root: Path, manifest: Manifest, digest: Digest, size: int) -> None:
    """An OCI image layout at ``root`` whose index names the cache (blobs already there are kept)."""
    blobs = root / "blobs" / "sha256"
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        for blob in (*manifest.layers, manifest.config):
            _copy_blob(store.blobs.path(blob.digest), blobs / blob.digest.hex)
        _copy_blob(store.blobs.path(digest), blobs / digest.hex)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        entry = Descriptor(mt.OCI_MANIFEST, digest, size, annotations={_REF_NAME: "latest"})
        _atomic_write(root / "index.json", Index((entry,)).encode())
    except OSError as exc:
        raise StoreError(f"{root}: {exc.strerror or exc}") from exc


def _copy_blob(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- import ----------------------------------------------------------------------------------


BlobFetcher = Callable[[Descriptor], None]


class ImportedCache:
    """Records read from ``--cache-from`` sources, and how to fetch each one's layer blobs.

    The first source that has a key wins. Holds registry sessions open for lazy
    fetches: :meth:`close` when the build ends.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.records: dict[str, dict[str, Any]] = {}
        self._fetchers: dict[Digest, tuple[Descriptor, BlobFetcher]] = {}
        self._clients: list[RegistryClient] = []

    def add(self, records: Mapping[str, dict[str, Any]], layers: Iterable[Descriptor], fetch: BlobFetcher) -> None:
        for key, record in records.items():
            self.records.setdefault(key, record)
        for desc in layers:
            self._fetchers.setdefault(desc.digest, (desc, fetch))

    def get(self, key: str) -> dict[str, Any] | None:
        record = self.records.get(key)
        return dict(record) if record is not None else None

    def fetch(self, digest: Digest) -> None:
        """Bring ``digest`` into the store from the source that listed it (errors propagate)."""
        if self.store.blobs.has(digest):
            return
        if digest not in self._fetchers:
            raise StoreError(f"blob {digest} is in no imported cache")
        desc, fetch = self._fetchers[digest]
        fetch(desc)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


def import_caches(store: Store, specs: Iterable[CacheSpec], warn: Callable[[str], None]) -> ImportedCache:
    """Read every source's records; one that is missing or broken is a warning (as BuildKit does)."""
    imported = ImportedCache(store)
    for spec in specs:
        try:
            if spec.type == "registry":
                _import_registry(imported, Reference.parse(spec.location))
            else:
                _import_local(imported, Path(spec.location))
        except LaminaError as exc:
            warn(f"importing cache from {spec}: {exc}")
    return imported


def _import_registry(imported: ImportedCache, ref: Reference) -> None:
    from lamina.transport.mirrors import registry_client
    from lamina.transport.registry.pull import fetch_blob, fetch_manifest

    client = registry_client(ref.domain)
    try:
        data, _, _ = fetch_manifest(client, ref.path, ref.reference, expected=ref.digest, what=f"reading {ref}")
        manifest = _check_manifest(data, str(ref))
        store = imported.store
        if not store.blobs.has(manifest.config.digest):
            fetch_blob(store, client, ref, manifest.config, "config")
        records = decode_cache_config(store.blobs.read(manifest.config.digest))
    except BaseException:
        client.close()
        raise
    imported._clients.append(client)
    imported.add(records, manifest.layers, lambda desc: fetch_blob(store, client, ref, desc))


def _import_local(imported: ImportedCache, root: Path) -> None:
    blobs = root / "blobs" / "sha256"
    try:
        index = decode((root / "index.json").read_bytes())
    except FileNotFoundError:
        raise LaminaError(f"{root}: no index.json (not an OCI layout)") from None
    if not isinstance(index, Index) or not index.manifests:
        raise LaminaError(f"{root}/index.json: no manifest")
    named = [d for d in index.manifests if d.annotations.get(_REF_NAME) == "latest"]
    desc = (named or list(index.manifests))[-1]
    store = imported.store

    def copy_in(blob: Descriptor) -> None:
        if store.blobs.has(blob.digest):
            return
        try:
            with open(blobs / blob.digest.hex, "rb") as src, store.blobs.writer(expected=blob.digest) as writer:
                shutil.copyfileobj(src, writer)
                writer.commit()
        except FileNotFoundError:
            raise StoreError(f"{root}: blob {blob.digest} is missing") from None

    copy_in(desc)
    manifest = _check_manifest(store.blobs.read(desc.digest), str(root))
    copy_in(manifest.config)
    imported.add(decode_cache_config(store.blobs.read(manifest.config.digest)), manifest.layers, copy_in)


__all__ = ["CACHE_CONFIG", "CacheSpec", "ImportedCache", "cache_manifest", "decode_cache_config",
           "encode_cache", "export_cache", "import_caches", "parse_cache_spec", "select_records"]
