"""Pulling an image: registry → verified blobs in the local store → tag.

Order of work, so a failure leaves nothing that claims to be complete:
manifest (verified against the digest asked for, or the one the registry
announced) → for an index, the platform's manifest → config and layers, each
streamed into a blob writer that checks its digest before the blob appears →
the image record → the tag. Blobs already in the store are not fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib

from lamina.errors import DigestMismatch, LaminaError, RegistryError
from lamina.image.layersize import BackgroundSizeCounter
from lamina.model import model
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, decode
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage
from lamina.transport import mirrors
from lamina.transport.http import Response, TransportError
from lamina.transport.registry.client import MANIFEST_ACCEPT, RegistryClient, response_error
from lamina.transport.registry.events import BlobKind, Emitter, Progress, Resolved
from lamina.transport.registry.parallel import WORKERS, run_all
from lamina.transport.registry.scope import repository_scope

MAX_MANIFEST_SIZE = 4 << 20  # containerd's limit: a manifest is metadata, not a payload
CHUNK = 1 << 20
BLOB_TRIES = 3  # whole-blob restarts after a connection drops mid-body


@model
class _Pull:
    store: Store
    client: RegistryClient
    ref: Reference
    emit: Emitter

    @property
    def what(self) -> str:
        return f"pulling {self.ref}"

    @property
    def scope(self) -> tuple[str, ...]:
        return (repository_scope(self.ref.path, "pull"),)


def pull(store: Store, ref: Reference, *, client: RegistryClient | None = None,
         platform: Platform | None = None, progress: Progress | None = None,
         workers: int = WORKERS) -> StoredImage:
    """Fetch ``ref`` into ``store`` and return the stored image (tagged when ``ref`` has a tag).

    ``client`` defaults to one for ``ref.domain`` with the docker config's
    credentials (and is closed afterwards); ``platform`` picks from an index
    and defaults to the host's. Without ``client``, Docker Hub pulls try the
    configured mirrors first (:mod:`lamina.transport.mirrors`).
    """
    if client is not None and client.domain != ref.domain:
        raise ValueError(f"a client for {client.domain} cannot pull {ref}")
    if client is None:
        config = mirrors.load()
        for mirror in config.mirrors_for(ref.domain):
            # a mirror that fails, for any reason, is skipped: dockerd falls back to the origin
            with contextlib.suppress(LaminaError), \
                    mirrors.registry_client(mirror.domain, config, insecure=mirror.insecure, tries=2) as via:
                return _run(_Pull(store, via, ref, Emitter(progress)), platform or Platform.host(), workers)
    session = client or mirrors.registry_client(ref.domain)
    try:
        job = _Pull(store, session, ref, Emitter(progress))
        return _run(job, platform or Platform.host(), workers)
    finally:
        if client is None:
            session.close()


def _run(job: _Pull, platform: Platform, workers: int) -> StoredImage:
    data, manifest, fetched = _resolve(job, platform)
    blobs: list[tuple[Descriptor, BlobKind]] = [(manifest.config, "config")]
    blobs += [(layer, "layer") for layer in manifest.layers]
    missing: dict[Digest, tuple[Descriptor, BlobKind]] = {}
    for desc, kind in blobs:
        if job.store.blobs.has(desc.digest):
            job.emit.blob(desc.digest, kind, "exists", desc.size, desc.size)
        else:
            missing.setdefault(desc.digest, (desc, kind))
    sizes: dict[Digest, int] = {}  # docker's layer sizes, counted as the layers stream in
    run_all(lambda item: _fetch_blob(job, *item, sizes), missing.values(), workers)
    try:
        stored = job.store.put_manifest_bytes(data, sizes=sizes)
    except LaminaError as exc:
        raise RegistryError(f"{job.what}: {exc}") from exc
    if job.ref.tag:
        job.store.tag(job.ref.with_tag(job.ref.tag), stored.manifest_digest)
    job.store.db.add_repo_digest(str(stored.manifest_digest), job.ref.repository, str(fetched[0]))
    for blob in dict.fromkeys([*fetched, *(d.digest for d, _ in blobs)]):
        job.store.db.add_source(job.ref.repository, str(blob))
    return stored


def _resolve(job: _Pull, platform: Platform) -> tuple[bytes, Manifest, list[Digest]]:
    """The image manifest's bytes and value, following an index to ``platform``'s entry.

    Also returns the digests of every manifest fetched; an index is kept as a blob.
    """
    data, digest, media_type = fetch_manifest(job.client, job.ref.path, job.ref.reference,
                                              expected=job.ref.digest, what=job.what)
    job.emit(Resolved(str(job.ref), digest, media_type))
    parsed = _decode(data, media_type, job.what)
    fetched = [digest]
    if isinstance(parsed, Index):
        job.store.blobs.put(data, digest)
        desc = select_manifest(parsed, platform)
        if desc is None:
            raise RegistryError(f"{job.what}: no matching manifest for {platform} in the index "
                                f"(available: {', '.join(available_platforms(parsed)) or 'none'})")
        data, digest, media_type = fetch_manifest(job.client, job.ref.path, str(desc.digest),
                                                  expected=desc.digest, what=job.what)
        parsed = _decode(data, media_type or desc.media_type, job.what)
        if not isinstance(parsed, Manifest):
            raise RegistryError(f"{job.what}: {desc.digest} is a nested index, not an image manifest")
        fetched.append(digest)
    return data, parsed, fetched


def fetch_manifest(client: RegistryClient, name: str, reference: str, *, expected: Digest | None,
                   what: str) -> tuple[bytes, Digest, str]:
    """GET a manifest: its exact bytes, their verified digest, and the Content-Type."""
    response = client.request("GET", f"/v2/{name}/manifests/{reference}", what=what,
                              scope=(repository_scope(name, "pull"),),
                              headers={"Accept": MANIFEST_ACCEPT}, stream=True)
    if response.status_code != 200:
        raise response_error(response, what, unknown=f"manifest unknown: {name}:{reference}"
                             if not reference.startswith("sha") else f"manifest unknown: {name}@{reference}")
    with contextlib.closing(response):
        data = _read_limited(response, MAX_MANIFEST_SIZE, what)
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    announced = response.headers.get("Docker-Content-Digest")
    if expected is None and announced:
        try:
            expected = Digest.parse(announced.strip())
        except LaminaError as exc:
            raise RegistryError(f"{what}: the registry sent an invalid digest {announced!r}") from exc
    return data, verify_bytes(data, expected, what), media_type


def verify_bytes(data: bytes, expected: Digest | None, what: str) -> Digest:
    """The digest of ``data``, which must be ``expected`` when one is given."""
    if expected is None:
        return Digest.of(data)
    try:
        actual = Digest.from_hasher(hashlib.new(expected.algorithm, data))
    except ValueError as exc:
        raise RegistryError(f"{what}: unsupported digest algorithm {expected.algorithm}") from exc
    if actual != expected:
        raise DigestMismatch(f"{what}: manifest {expected}: content hashes to {actual}")
    return actual


def fetch_blob(store: Store, client: RegistryClient, ref: Reference, desc: Descriptor,
               kind: BlobKind = "layer") -> None:
    """One blob of ``ref``'s repository into ``store``, verified (for build-cache imports)."""
    _fetch_blob(_Pull(store, client, ref, Emitter(None)), desc, kind)


def _fetch_blob(job: _Pull, desc: Descriptor, kind: BlobKind, sizes: dict[Digest, int] | None = None) -> None:
    """Download one blob into the store, starting over if the connection drops mid-body.

    For a layer, docker's size of it goes into ``sizes`` when it could be counted.
    """
    for attempt in range(BLOB_TRIES):
        try:
            size = _download(job, desc, kind, count=sizes is not None and kind == "layer")
            if size is not None and sizes is not None:
                sizes[desc.digest] = size
            return
        except TransportError as exc:
            if attempt == BLOB_TRIES - 1:
                raise RegistryError(f"{job.what}: downloading {desc.digest}: {type(exc).__name__}: {exc}") from exc


def _download(job: _Pull, desc: Descriptor, kind: BlobKind, *, count: bool = False) -> int | None:
    """Fetch and verify one blob; with ``count``, also return docker's size of the layer (None if unknown)."""
    # counted in a thread as the bytes arrive, so decompressing overlaps the download
    counter = BackgroundSizeCounter() if count else None
    try:
        _stream_blob(job, desc, kind, counter)
    finally:
        size = counter.close() if counter is not None else None
    return size


def _stream_blob(job: _Pull, desc: Descriptor, kind: BlobKind, counter: BackgroundSizeCounter | None) -> None:
    digest, total = desc.digest, desc.size
    # identity: the bytes must hash to the digest as sent, never as a proxy re-encoded them
    response = job.client.request("GET", f"/v2/{job.ref.path}/blobs/{digest}", scope=job.scope,
                                  what=job.what, headers={"Accept-Encoding": "identity"},
                                  stream=True, follow_redirects=True)
    if response.status_code != 200:
        raise response_error(response, job.what, unknown=f"blob unknown: {digest}")
    with contextlib.closing(response), job.store.blobs.writer(expected=digest) as writer:
        done = 0
        job.emit.blob(digest, kind, "transferring", 0, total)
        for chunk in response.iter_raw(CHUNK):
            done += len(chunk)
            if done > total:
                raise DigestMismatch(f"{job.what}: blob {digest}: more than the {total} bytes announced")
            writer.write(chunk)
            if counter is not None:
                counter.feed(chunk)
            job.emit.blob(digest, kind, "transferring", done, total)
        if done != total:
            raise DigestMismatch(f"{job.what}: blob {digest}: got {done} of the {total} bytes announced")
        try:
            writer.commit()
        except DigestMismatch as exc:
            raise DigestMismatch(f"{job.what}: {exc}") from exc
    job.emit.blob(digest, kind, "complete", total, total)


def list_tags(client: RegistryClient, name: str, *, page: int = 1000) -> list[str]:
    """Every tag of repository ``name`` (``GET /v2/<name>/tags/list``, following ``Link`` pages)."""
    what = f"listing the tags of {client.domain}/{name}"
    path: str | None = f"/v2/{name}/tags/list?n={page}"
    tags: list[str] = []
    for _ in range(10_000):  # a registry that links in circles must not loop forever
        if path is None:
            return tags
        response = client.request("GET", path, scope=(repository_scope(name, "pull"),), what=what)
        if response.status_code != 200:
            raise response_error(response, what, unknown=f"repository unknown: {name}")
        try:
            found = response.json().get("tags") or []
        except (ValueError, AttributeError) as exc:
            raise RegistryError(f"{what}: malformed answer: {exc}") from exc
        tags += [t for t in found if isinstance(t, str)]
        path = response.links.get("next", {}).get("url")
    raise RegistryError(f"{what}: too many pages")


def select_manifest(index: Index, platform: Platform) -> Descriptor | None:
    """The index entry serving ``platform``; an exact variant match wins over a compatible one."""
    usable = [d for d in index.manifests if d.platform is not None and platform.matches(d.platform)]
    exact = [d for d in usable if d.platform is not None and d.platform.variant == platform.variant]
    best = exact or usable
    return best[0] if best else None


def available_platforms(index: Index) -> list[str]:
    """The platforms an index offers, for error messages (attestations' ``unknown/unknown`` left out)."""
    found = {str(d.platform) for d in index.manifests if d.platform and d.platform.os != "unknown"}
    return sorted(found)


def _decode(data: bytes, media_type: str, what: str) -> Manifest | Index:
    try:
        return decode(data, media_type or None)
    except LaminaError as exc:
        raise RegistryError(f"{what}: {exc}") from exc


def _read_limited(response: Response, limit: int, what: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise RegistryError(f"{what}: manifest larger than {limit} bytes")
            parts.append(chunk)
    except TransportError as exc:
        raise RegistryError(f"{what}: reading manifest: {type(exc).__name__}: {exc}") from exc
    return b"".join(parts)


__all__ = ["available_platforms", "fetch_blob", "fetch_manifest", "list_tags", "pull", "select_manifest",
           "verify_bytes"]
