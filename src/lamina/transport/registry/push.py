"""Pushing an image: missing blobs first, then the manifest, byte for byte as stored.

Per blob, the cheapest way that works: skip it when the repository has it
(HEAD); mount it from another repository of the same registry we know holds
it (``db.sources``); else upload it, in one PUT below ``chunk_size`` or in
PATCH chunks above. Layers and the config go in parallel (each blob's HEAD,
POST and PUT overlap the others'); the manifest goes last, so the registry never
holds a manifest whose blobs are missing. The
manifest bytes are the stored ones, so the remote digest equals the local one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from lamina.errors import AuthError, RegistryError, StoreError
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage
from lamina.transport.credentials import CredentialStore
from lamina.transport.registry.auth import repository_scope
from lamina.transport.registry.client import Body, RegistryClient, response_error
from lamina.transport.registry.events import BlobKind, Emitter, Progress
from lamina.transport.registry.parallel import WORKERS, run_all

CHUNK_SIZE = 32 << 20  # blobs up to this size go in one request; larger ones in chunks of it
READ_SIZE = 1 << 20
_OCTETS = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class PushResult:
    """The pushed manifest's digest and size (what ``name@digest`` now names remotely)."""

    digest: Digest
    size: int


@dataclass(frozen=True, slots=True)
class _Push:
    store: Store
    client: RegistryClient
    ref: Reference
    emit: Emitter
    chunk_size: int
    refused: set[str] = field(default_factory=set)  # mount sources the token server would not let us read

    @property
    def what(self) -> str:
        return f"pushing {self.ref}"

    @property
    def scope(self) -> tuple[str, ...]:
        return (repository_scope(self.ref.path, "pull", "push"),)


def push(store: Store, image: StoredImage, ref: Reference, *, client: RegistryClient | None = None,
         progress: Progress | None = None, chunk_size: int = CHUNK_SIZE, workers: int = WORKERS) -> PushResult:
    """Push ``image`` to ``ref`` (its tag, else its digest, which must be the image's).

    ``client`` defaults to one for ``ref.domain`` with the docker config's
    credentials (closed afterwards). Blob sources are recorded for later mounts.
    """
    if ref.digest is not None and ref.digest != image.manifest_digest:
        raise RegistryError(f"pushing {ref}: the image's manifest is {image.manifest_digest}")
    if client is not None and client.domain != ref.domain:
        raise ValueError(f"a client for {client.domain} cannot push {ref}")
    session = client or RegistryClient(ref.domain, credentials=CredentialStore())
    try:
        job = _Push(store, session, ref, Emitter(progress), max(1, chunk_size))
        layers = {d.digest: d for d in image.manifest.layers if _distributable(d)}
        mounts = {d: _mount_source(store, ref, d) for d in [*layers, image.manifest.config.digest]}
        blobs: list[tuple[Descriptor, BlobKind]] = [(d, "layer") for d in layers.values()]
        blobs.append((image.manifest.config, "config"))
        run_all(lambda blob: _push_blob(job, *blob, mounts[blob[0].digest]), blobs, workers)
        data = store.blobs.read(image.manifest_digest)
        digest = _put_manifest(job, data, image.manifest.media_type, ref.tag or str(image.manifest_digest))
        for blob in [*layers, image.manifest.config.digest, digest]:
            store.db.add_source(ref.repository, str(blob))
        return PushResult(digest, len(data))
    finally:
        if client is None:
            session.close()


def _push_blob(job: _Push, desc: Descriptor, kind: BlobKind, mount_from: str | None = None) -> None:
    """Make ``desc``'s blob exist in the repository: skip, mount from ``mount_from``, or upload."""
    digest = desc.digest
    if blob_exists(job.client, job.ref.path, digest, what=job.what):
        job.emit.blob(digest, kind, "exists", desc.size, desc.size)
        return
    if not job.store.blobs.has(digest):
        raise StoreError(f"{job.what}: blob {digest} is in neither the registry nor the local store")
    location = _mount(job, digest, mount_from) if mount_from else _start_upload(job)
    if location is None:
        job.emit.blob(digest, kind, "mounted", desc.size, desc.size)
        return
    size = job.store.blobs.size(digest)
    body: Body
    if size > job.chunk_size:
        location = _upload_chunks(job, location, digest, kind, size)
        body, headers = b"", _octets(0)
    else:
        body, headers = _file_body(job, digest, kind, 0, size, size), _octets(size)
    response = job.client.request("PUT", location, scope=job.scope, what=job.what, body=body,
                                  params={"digest": str(digest)}, headers=headers)
    if response.status_code not in (201, 204):
        raise response_error(response, f"{job.what}: uploading {digest}")
    job.emit.blob(digest, kind, "complete", size, size)


def blob_exists(client: RegistryClient, name: str, digest: Digest, *, what: str) -> bool:
    """HEAD the blob in repository ``name``."""
    response = client.request("HEAD", f"/v2/{name}/blobs/{digest}", what=what,
                              scope=(repository_scope(name, "pull", "push"),))
    if response.status_code == 200:
        return True
    if response.status_code == 404:
        return False
    raise response_error(response, f"{what}: checking {digest}")


def _put_manifest(job: _Push, data: bytes, media_type: str, reference: str) -> Digest:
    """PUT the manifest bytes under ``reference``; the digest the registry confirms."""
    response = job.client.request("PUT", f"/v2/{job.ref.path}/manifests/{reference}", scope=job.scope,
                                  what=job.what, body=data, headers={"Content-Type": media_type})
    if response.status_code not in (200, 201, 202, 204):
        raise response_error(response, f"{job.what}: putting the manifest")
    local = Digest.of(data)
    announced = response.headers.get("Docker-Content-Digest")
    if announced and announced.strip() != str(local):
        raise RegistryError(f"{job.what}: the registry stored the manifest as {announced.strip()}, not {local}")
    return local


def _mount(job: _Push, digest: Digest, source: str) -> str | None:
    """Try a cross-repository mount; None when mounted, else the upload session it opened."""
    scope = (*job.scope, repository_scope(source, "pull"))
    if source in job.refused:
        return _start_upload(job)
    try:
        response = job.client.request("POST", f"/v2/{job.ref.path}/blobs/uploads/", scope=scope, what=job.what,
                                      params={"mount": str(digest), "from": source}, retry=True)
    except AuthError:  # the token server refused the source's pull scope (a 403): upload instead
        job.refused.add(source)
        return _start_upload(job)
    if response.status_code == 401:  # a token without pull on the source: mounting from there is no use
        job.refused.add(source)
    if response.status_code == 201:
        return None
    if response.status_code == 202 and response.headers.get("Location"):
        return _location(response)
    return _start_upload(job)  # mounting is an optimisation: any refusal means a normal upload


def _start_upload(job: _Push) -> str:
    response = job.client.request("POST", f"/v2/{job.ref.path}/blobs/uploads/", scope=job.scope,
                                  what=job.what, retry=True)
    if response.status_code != 202 or not response.headers.get("Location"):
        raise response_error(response, f"{job.what}: starting an upload")
    return _location(response)


def _upload_chunks(job: _Push, location: str, digest: Digest, kind: BlobKind, size: int) -> str:
    """PATCH the blob in ``chunk_size`` pieces, following each new Location; the last one."""
    offset = 0
    while offset < size:
        length = min(job.chunk_size, size - offset)
        headers = dict(_octets(length), **{"Content-Range": f"{offset}-{offset + length - 1}"})
        response = job.client.request("PATCH", location, scope=job.scope, what=job.what, headers=headers,
                                      body=_file_body(job, digest, kind, offset, length, size))
        if response.status_code != 202 or not response.headers.get("Location"):
            raise response_error(response, f"{job.what}: uploading {digest} at byte {offset}")
        location = _location(response)
        offset += length
    return location


def _file_body(job: _Push, digest: Digest, kind: BlobKind, start: int, length: int,
               total: int) -> Callable[[], Iterator[bytes]]:
    """A fresh reader of ``length`` bytes from ``start`` per call, so a retry resends from there."""
    def read() -> Iterator[bytes]:
        with job.store.blobs.open(digest) as f:
            f.seek(start)
            done = 0
            while done < length:
                chunk = f.read(min(READ_SIZE, length - done))
                if not chunk:
                    raise StoreError(f"{job.what}: blob {digest} is shorter than {start + length} bytes")
                done += len(chunk)
                job.emit.blob(digest, kind, "transferring", start + done, total)
                yield chunk
    return read


def _location(response: httpx.Response) -> str:
    """A Location header, made absolute against the request it answered (it may be relative)."""
    return str(response.url.join(response.headers["Location"]))


def _octets(length: int) -> dict[str, str]:
    return {"Content-Type": _OCTETS, "Content-Length": str(length)}


def _mount_source(store: Store, ref: Reference, digest: Digest) -> str | None:
    """Another repository on ``ref``'s registry known to hold ``digest``."""
    for repository in sorted(store.db.sources(str(digest))):
        domain, _, path = repository.partition("/")
        if domain == ref.domain and path != ref.path:
            return path
    return None


def _distributable(desc: Descriptor) -> bool:
    """Foreign (Windows base) layers stay where their URLs point; registries refuse them."""
    return "foreign" not in desc.media_type and "nondistributable" not in desc.media_type


__all__ = ["CHUNK_SIZE", "PushResult", "blob_exists", "push"]
