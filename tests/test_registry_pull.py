"""Pulling against fake registries: verification, platforms, errors that name their subject."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.registry import FakeRegistry, FakeRequest, MemoryRegistry, Reply, make_image
from lamina.errors import DigestMismatch, RegistryError
from lamina.oci import mediatype as mt
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage
from lamina.transport.registry.client import RegistryClient
from lamina.transport.registry.events import BlobProgress, Event, Resolved
from lamina.transport.registry.pull import available_platforms, list_tags, pull, select_manifest
from lamina.transport.registry.push import push

AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64", "v8")


@pytest.fixture
def memory() -> Iterator[tuple[FakeRegistry, MemoryRegistry]]:
    mem = MemoryRegistry()
    with FakeRegistry(mem) as fake:
        mem.host = fake.host
        yield fake, mem


def _publish(tmp_path: Path, host: str, name: str = "app:v1", **files: bytes) -> tuple[StoredImage, Reference]:
    store = Store(tmp_path / "source")
    image = make_image(store, files or {"a": b"alpha"}, {"b": os.urandom(2048)})
    ref = Reference.parse(f"{host}/{name}")
    with RegistryClient(host) as client:
        push(store, image, ref, client=client)
    return image, ref


def _tmp_files(store: Store) -> list[str]:
    return os.listdir(store.root / "tmp")


def test_pull_round_trip_with_progress_and_sources(tmp_path: Path, memory: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, _ = memory
    image, ref = _publish(tmp_path, fake.host)
    store = Store(tmp_path / "dest")
    events: list[Event] = []
    pulled = pull(store, ref, progress=events.append)
    assert pulled.manifest_digest == image.manifest_digest
    assert store.resolve(str(ref)).manifest_digest == image.manifest_digest
    assert events[0] == Resolved(str(ref), image.manifest_digest, mt.DOCKER_MANIFEST)
    complete = {e.digest for e in events if isinstance(e, BlobProgress) and e.status == "complete"}
    assert complete == {image.config_digest, *(layer.digest for layer in image.manifest.layers)}
    for layer in image.manifest.layers:
        assert store.db.sources(str(layer.digest)) == [ref.repository]


def test_blobs_already_in_the_store_are_not_fetched(tmp_path: Path, memory: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, _ = memory
    _, ref = _publish(tmp_path, fake.host)
    store = Store(tmp_path / "dest")
    pull(store, ref)
    fake.requests.clear()
    events: list[Event] = []
    pull(store, ref, progress=events.append)
    assert [r.method for r in fake.requests] == ["GET"]  # the manifest only
    assert {e.status for e in events if isinstance(e, BlobProgress)} == {"exists"}


def test_pull_by_digest_verifies_and_does_not_tag(tmp_path: Path, memory: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, _ = memory
    image, ref = _publish(tmp_path, fake.host)
    store = Store(tmp_path / "dest")
    by_digest = Reference.parse(f"{fake.host}/app@{image.manifest_digest}")
    assert pull(store, by_digest).manifest_digest == image.manifest_digest
    assert store.db.tags() == []


def test_wrong_blob_bytes_are_a_digest_mismatch_and_nothing_is_stored(tmp_path: Path) -> None:
    mem = MemoryRegistry()

    def tamper(request: FakeRequest) -> Reply:
        reply = mem(request)
        if request.method == "GET" and "/blobs/" in request.path and reply.status == 200:
            return Reply(200, bytes(reversed(reply.body)))  # same size, other bytes
        return reply

    with FakeRegistry(tamper) as fake:
        mem.host = fake.host
        image, ref = _publish(tmp_path, fake.host)
        store = Store(tmp_path / "dest")
        with pytest.raises(DigestMismatch, match=r"^pulling .*content hashes to sha256:"):
            pull(store, ref)
    for digest in (image.config_digest, *(layer.digest for layer in image.manifest.layers)):
        assert not store.blobs.has(digest)
    assert _tmp_files(store) == [] and store.db.tags() == []


def test_oversized_blob_is_refused(tmp_path: Path) -> None:
    mem = MemoryRegistry()

    def pad(request: FakeRequest) -> Reply:
        reply = mem(request)
        if request.method == "GET" and "/blobs/" in request.path:
            return Reply(reply.status, reply.body + b"extra")
        return reply

    with FakeRegistry(pad) as fake:
        mem.host = fake.host
        _, ref = _publish(tmp_path, fake.host)
        with pytest.raises(DigestMismatch, match="more than the"):
            pull(Store(tmp_path / "dest"), ref)


def test_manifest_not_matching_its_announced_digest(tmp_path: Path) -> None:
    body = b'{"schemaVersion":2}'
    wrong = "sha256:" + "0" * 64
    reply = Reply(200, body, {"Content-Type": mt.DOCKER_MANIFEST, "Docker-Content-Digest": wrong})
    with FakeRegistry(lambda r: reply) as fake, pytest.raises(DigestMismatch, match=f"manifest {wrong}"):
        pull(Store(tmp_path), Reference.parse(f"{fake.host}/app:v1"))
    right = Digest.of(body)
    with FakeRegistry(lambda r: Reply(200, body)) as fake, pytest.raises(DigestMismatch):
        pull(Store(tmp_path), Reference.parse(f"{fake.host}/app@{Digest('sha256', 'f' * 64)}"))
    assert right != Digest("sha256", "f" * 64)


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "malformed manifest"),
    (b"[1, 2]", "malformed manifest: not a JSON object"),
    (b'{"schemaVersion": 1, "name": "app"}', "unsupported manifest schema version 1"),
    (b'{"schemaVersion": 2, "mediaType": "' + mt.DOCKER_MANIFEST.encode() + b'", "layers": []}',
     "malformed manifest: missing 'config'"),
])
def test_malformed_manifest_is_a_clear_error(tmp_path: Path, body: bytes, message: str) -> None:
    reply = Reply(200, body, {"Content-Type": mt.DOCKER_MANIFEST})
    with FakeRegistry(lambda r: reply) as fake, pytest.raises(RegistryError) as info:
        pull(Store(tmp_path), Reference.parse(f"{fake.host}/app:v1"))
    assert str(info.value).startswith(f"pulling {fake.host}/app:v1: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_manifest_names_the_reference(tmp_path: Path, memory: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, _ = memory
    with pytest.raises(RegistryError) as info:
        pull(Store(tmp_path), Reference.parse(f"{fake.host}/app:nope"))
    assert str(info.value) == (f"pulling {fake.host}/app:nope: manifest unknown: app:nope "
                               "(MANIFEST_UNKNOWN: manifest unknown)")
    assert info.value.status == 404 and info.value.code == "MANIFEST_UNKNOWN"


def test_missing_blob_names_the_digest(tmp_path: Path, memory: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, mem = memory
    image, ref = _publish(tmp_path, fake.host)
    layer = image.manifest.layers[1].digest
    mem.links.discard(("app", str(layer)))
    with pytest.raises(RegistryError, match=f"blob unknown: {layer} \\(BLOB_UNKNOWN"):
        pull(Store(tmp_path / "dest"), ref)


# --- indexes ------------------------------------------------------------------------


def _index(*entries: tuple[StoredImage, Platform]) -> Index:
    return Index(tuple(Descriptor(mt.DOCKER_MANIFEST, img.manifest_digest, len(img.manifest.encode()), platform=p)
                       for img, p in entries), mt.OCI_INDEX)


def _publish_index(tmp_path: Path, host: str, mem: MemoryRegistry) -> tuple[bytes, StoredImage, StoredImage]:
    amd, ref = _publish(tmp_path / "amd", host, "app:amd", a=b"amd64")
    arm, _ = _publish(tmp_path / "arm", host, "app:arm", a=b"arm64")
    attestation = Descriptor(mt.OCI_MANIFEST, Digest("sha256", "a" * 64), 1, platform=Platform("unknown", "unknown"))
    index = _index((amd, AMD64), (arm, ARM64))
    data = Index((*index.manifests, attestation), mt.OCI_INDEX).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    for key in ("multi", digest):
        mem.manifests[("app", key)] = (data, mt.OCI_INDEX)
    return data, amd, arm


def test_index_picks_the_platform_and_keeps_the_index_blob(tmp_path: Path,
                                                          memory: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, mem = memory
    data, amd, arm = _publish_index(tmp_path, fake.host, mem)
    ref = Reference.parse(f"{fake.host}/app:multi")
    store = Store(tmp_path / "dest")
    assert pull(store, ref, platform=ARM64).manifest_digest == arm.manifest_digest
    assert pull(store, ref, platform=AMD64).manifest_digest == amd.manifest_digest
    assert store.blobs.read(Digest.of(data)) == data
    assert store.resolve(str(ref)).manifest_digest == amd.manifest_digest


def test_no_matching_platform_lists_what_is_there(tmp_path: Path, memory: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, mem = memory
    _publish_index(tmp_path, fake.host, mem)
    with pytest.raises(RegistryError) as info:
        pull(Store(tmp_path / "dest"), Reference.parse(f"{fake.host}/app:multi"), platform=Platform("linux", "s390x"))
    assert str(info.value).endswith("no matching manifest for linux/s390x in the index "
                                    "(available: linux/amd64, linux/arm64/v8)")


def test_select_manifest_prefers_an_exact_variant() -> None:
    def desc(n: str, platform: Platform) -> Descriptor:
        return Descriptor(mt.OCI_MANIFEST, Digest("sha256", n * 64), 1, platform=platform)

    index = Index((desc("1", Platform("linux", "arm", "v6")), desc("2", Platform("linux", "arm", "v7")),
                   desc("3", Platform("linux", "arm64"))))
    assert select_manifest(index, Platform("linux", "arm", "v7")) == index.manifests[1]
    assert select_manifest(index, Platform("linux", "arm")) == index.manifests[0]
    assert select_manifest(index, Platform("linux", "arm64", "v8")) == index.manifests[2]
    assert select_manifest(index, Platform("windows", "amd64")) is None
    assert available_platforms(index) == ["linux/arm/v6", "linux/arm/v7", "linux/arm64"]


def test_connection_dropped_mid_blob_starts_the_blob_over(tmp_path: Path) -> None:
    mem = MemoryRegistry()
    dropped: list[str] = []

    def drop_once(request: FakeRequest) -> Reply:
        reply = mem(request)
        if request.method == "GET" and "/blobs/" in request.path and request.path not in dropped:
            dropped.append(request.path)  # announce more than we send, then close: a broken body
            return Reply(200, reply.body[:10], {"Content-Length": str(len(reply.body)), "Connection": "close"})
        return reply

    with FakeRegistry(drop_once) as fake:
        mem.host = fake.host
        image, ref = _publish(tmp_path, fake.host)
        store = Store(tmp_path / "dest")
        assert pull(store, ref).manifest_digest == image.manifest_digest
    assert len(dropped) == 3 and _tmp_files(store) == []


def test_client_for_another_registry_is_refused(tmp_path: Path) -> None:
    with RegistryClient("other.example") as client, pytest.raises(ValueError, match="other.example"):
        pull(Store(tmp_path), Reference.parse("127.0.0.1:1/app:v1"), client=client)


# -- docker's layer sizes while downloading, and tag lists (p10) -------------------------------------

def test_pull_records_dockers_layer_sizes(tmp_path: Path, memory: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, _ = memory
    image, ref = _publish(tmp_path, fake.host, a=b"alpha", c=b"x" * 5000)
    store = Store(tmp_path / "dest")
    pulled = pull(store, ref)
    sizes = [store.db.diff_size(str(layer.digest)) for layer in pulled.image.layers]
    assert sizes == [len(b"alpha") + 5000, 2048]  # the files' bytes, not the blobs' or tars' sizes


def test_list_tags_follows_link_pages(tmp_path: Path) -> None:
    pages = {"": (["a", "b"], '</v2/team/app/tags/list?n=2&last=b>; rel="next"'), "b": (["c"], None)}

    def tags(request: FakeRequest) -> Reply:
        found, link = pages[request.query.get("last", [""])[0]]
        headers = {"Content-Type": "application/json", **({"Link": link} if link else {})}
        return Reply(200, json.dumps({"name": "team/app", "tags": found}).encode(), headers)

    with FakeRegistry(tags) as fake, RegistryClient(fake.host) as client:
        assert list_tags(client, "team/app", page=2) == ["a", "b", "c"]
    with FakeRegistry(lambda r: Reply(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')) as fake, \
            RegistryClient(fake.host) as client, pytest.raises(RegistryError, match="repository unknown: team/x"):
        list_tags(client, "team/x")
