"""Pushing an image: missing blobs first, then the manifest, byte for byte as stored.

Per blob, the fewest round trips that work, chosen from what the store
knows (``db.sources``: the repositories we pushed it to or pulled it from):

- recorded in the target repository: nothing at all (we put it there, or pulled it from
  there). Should the registry have lost it since (garbage collection, a deleted repository),
  the manifest comes back ``MANIFEST_BLOB_UNKNOWN``: those blobs are then asked about and sent
  as below, and the manifest put again. docker HEADs each of them instead, a round trip per
  layer on every push of a rebuilt image;
- recorded in another repository of the registry: mount it from there at once
  (a 201 says it is there, whatever the target held); a refused mount opens
  an upload session, which a HEAD then uses or, when the blob is there, cancels;
- recorded nowhere on the registry and small (``SMALL_BLOB``): upload it
  without asking, as docker does for blobs it has no record of: the HEAD
  would add a round trip to every new blob, to spare re-sending a small one;
- else HEAD, then upload. A blob missing from the local store is always
  asked about first, and can still be mounted.

An upload goes in one PUT below ``chunk_size`` or in PATCH chunks above.
Layers and the config go in parallel (each blob's requests overlap the
others'); the manifest goes last, so the registry never holds a manifest
whose blobs are missing. The manifest bytes are the stored ones, so the
remote digest equals the local one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import field
from urllib.parse import urljoin

from lamina.errors import AuthError, RegistryError, StoreError
from lamina.model import model
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage
from lamina.transport.credentials import CredentialStore
from lamina.transport.http import Response
from lamina.transport.registry.client import Body, RegistryClient, response_error
from lamina.transport.registry.events import BlobKind, Emitter, Progress
from lamina.transport.registry.parallel import WORKERS, run_all
from lamina.transport.registry.scope import repository_scope

_BLOB_UNKNOWN = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"})
CHUNK_SIZE = 32 << 20  # blobs up to this size go in one request; larger ones in chunks of it
SMALL_BLOB = 1 << 20  # a blob recorded nowhere goes up unasked up to this size (a round trip's worth)
READ_SIZE = 1 << 20
_OCTETS = "application/octet-stream"


@model
class PushResult:
    """The pushed manifest's digest and size (what ``name@digest`` now names remotely)."""

    digest: Digest
    size: int


@model
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
        blobs: list[tuple[Descriptor, BlobKind]] = [(d, "layer") for d in layers.values()]
        blobs.append((image.manifest.config, "config"))
        sources = {d.digest: store.db.sources(str(d.digest)) for d, _ in blobs}
        routes = {d.digest: route(sources[d.digest], ref, d.size) for d, _ in blobs}
        trusted = [blob for blob in blobs if ref.repository in sources[blob[0].digest] and
                   store.blobs.has(blob[0].digest)]
        blobs = [blob for blob in blobs if blob not in trusted]
        blobs.sort(key=lambda blob: _longest_first(routes[blob[0].digest], blob[0].size))
        run_all(lambda blob: _push_blob(job, *blob, routes[blob[0].digest]), blobs, workers)
        data = store.blobs.read(image.manifest_digest)
        reference = ref.tag or str(image.manifest_digest)
        try:
            digest = _put_manifest(job, data, image.manifest.media_type, reference)
        except RegistryError as exc:
            if not trusted or exc.code not in _BLOB_UNKNOWN:
                raise
            # the registry lost blobs we had put there: ask about each, send what is missing, put again
            run_all(lambda blob: _push_blob(job, *blob, routes[blob[0].digest]), trusted, workers)
            trusted = []
            digest = _put_manifest(job, data, image.manifest.media_type, reference)
        for desc, kind in trusted:
            job.emit.blob(desc.digest, kind, "exists", desc.size, desc.size)
        with store.db.transaction():  # one commit for all of them
            for blob in [*layers, image.manifest.config.digest, digest]:
                store.db.add_source(ref.repository, str(blob))
        return PushResult(digest, len(data))
    finally:
        if client is None:
            session.close()


def route(repositories: Iterable[str], ref: Reference, size: int) -> tuple[bool, str | None]:
    """How a blob of ``size`` bytes, known to be in ``repositories`` (``domain/path``), gets to ``ref``:
    whether to HEAD it first, and the repository of ``ref``'s registry to mount it from (see above)."""
    held = sorted({path for domain, _, path in (r.partition("/") for r in repositories) if domain == ref.domain})
    source = next((path for path in held if path != ref.path), None)
    if ref.path in held:
        return True, source
    return (False, source) if source is not None else (size > SMALL_BLOB, None)


def _longest_first(plan: tuple[bool, str | None], size: int) -> tuple[int, int]:
    """A sort key that starts the likely longest chains of requests before the workers fill up:
    a big blob to ask about (then maybe upload), a small one to upload, then single requests."""
    check, source = plan
    if check and source is None and size > SMALL_BLOB:
        return 0, -size
    return (1 if (check, source) == (False, None) else 2), -size


def _push_blob(job: _Push, desc: Descriptor, kind: BlobKind, plan: tuple[bool, str | None] = (True, None)) -> None:
    """Make ``desc``'s blob exist in the repository: skip, mount, or upload (``plan``: see :func:`route`)."""
    digest = desc.digest
    local = job.store.blobs.has(digest)
    check, source = plan if local else (True, plan[1])  # a blob we cannot send must be asked about
    location: str | None = None
    if not check and source is not None:
        if (location := _mount_or_open(job, desc, kind, source)) is None:
            return
        check, source = True, None  # refused: the repository may hold it all the same
    if check and blob_exists(job.client, job.ref.path, digest, what=job.what):
        if location is not None:
            _abandon(job, location)
        job.emit.blob(digest, kind, "exists", desc.size, desc.size)
        return
    if location is None and source is not None and (location := _mount_or_open(job, desc, kind, source)) is None:
        return
    if not local:
        if location is not None:
            _abandon(job, location)
        raise StoreError(f"{job.what}: blob {digest} is in neither the registry nor the local store")
    _upload(job, location or _start_upload(job), digest, kind)


def _mount_or_open(job: _Push, desc: Descriptor, kind: BlobKind, source: str) -> str | None:
    """Mount from ``source``: None when mounted, else the upload session the refusal left us."""
    location = _mount(job, desc.digest, source)
    if location is None:
        job.emit.blob(desc.digest, kind, "mounted", desc.size, desc.size)
    return location


def _upload(job: _Push, location: str, digest: Digest, kind: BlobKind) -> None:
    """Send the blob into the upload session at ``location``: one PUT, or PATCH chunks and a closing PUT."""
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


def _abandon(job: _Push, location: str) -> None:
    """Cancel an upload session we no longer need; the registry would expire it anyway."""
    with contextlib.suppress(RegistryError):  # AuthError is one too
        job.client.request("DELETE", location, scope=job.scope, what=job.what, retry=False).close()


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


def _location(response: Response) -> str:
    """A Location header, made absolute against the request it answered (it may be relative)."""
    return urljoin(response.url, response.headers["Location"])


def _octets(length: int) -> dict[str, str]:
    return {"Content-Type": _OCTETS, "Content-Length": str(length)}


def _distributable(desc: Descriptor) -> bool:
    """Foreign (Windows base) layers stay where their URLs point; registries refuse them."""
    return "foreign" not in desc.media_type and "nondistributable" not in desc.media_type


__all__ = ["CHUNK_SIZE", "SMALL_BLOB", "PushResult", "blob_exists", "push", "route"]
