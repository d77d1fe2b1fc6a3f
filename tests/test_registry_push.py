"""Pushing to the real CNCF registry on loopback (and a fake one for the odd cases).

The registry is Debian's ``docker-registry`` (distribution 2.8); skopeo reads
what we pushed as an independent client.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.registry import (
    FakeRegistry,
    MemoryRegistry,
    RunningRegistry,
    ensure_tool,
    make_image,
    running_registry,
)
from lamina.errors import AuthError, RegistryError, StoreError
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage
from lamina.transport.credentials import CredentialStore
from lamina.transport.http import Request
from lamina.transport.registry.client import RegistryClient
from lamina.transport.registry.events import BlobProgress, Event
from lamina.transport.registry.pull import pull
from lamina.transport.registry.push import SMALL_BLOB, PushResult, push, route

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    try:
        with running_registry(tmp_path_factory.mktemp("registry")) as reg:
            yield reg
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, StoredImage]:
    store = Store(tmp_path_factory.mktemp("source"))
    image = make_image(store, {"etc/hello": b"hello\n"}, {"data/random": os.urandom(200_000)})
    return store, image


class Recorder:
    """Counts the requests a client sends (its ``on_request`` callback)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []

    def __call__(self, request: Request) -> None:
        self.requests.append((request.method, request.parts.path, request.parts.query))

    def client(self, host: str, **kw: object) -> RegistryClient:
        return RegistryClient(host, on_request=self, **kw)  # type: ignore[arg-type]

    def uploads(self) -> list[tuple[str, str, str]]:
        return [r for r in self.requests if "/blobs/uploads/" in r[1] and r[0] != "POST"]


def _blobs(image: StoredImage) -> set[Digest]:
    return {image.config_digest, *(layer.digest for layer in image.manifest.layers)}


def test_push_then_pull_into_an_empty_store(tmp_path: Path, registry: RunningRegistry,
                                            source: tuple[Store, StoredImage]) -> None:
    store, image = source
    ref = Reference.parse(f"{registry.host}/lamina/roundtrip:v1")
    events: list[Event] = []
    result = push(store, image, ref, progress=events.append)
    assert result == PushResult(image.manifest_digest, len(store.blobs.read(image.manifest_digest)))
    assert {e.digest for e in events if isinstance(e, BlobProgress) and e.status == "complete"} == _blobs(image)
    dest = Store(tmp_path / "dest")
    pulled = pull(dest, ref)
    assert pulled.manifest_digest == image.manifest_digest and pulled.config_digest == image.config_digest
    for digest in _blobs(image):
        assert dest.blobs.read(digest) == store.blobs.read(digest)
    assert dest.resolve(str(ref)).manifest_digest == image.manifest_digest
    assert store.db.sources(str(image.manifest.layers[0].digest)) == [ref.repository]


def test_second_push_uploads_nothing(registry: RunningRegistry, source: tuple[Store, StoredImage]) -> None:
    store, image = source
    ref = Reference.parse(f"{registry.host}/lamina/again:v1")
    push(store, image, ref)
    recorder = Recorder()
    events: list[Event] = []
    with recorder.client(registry.host) as client:
        push(store, image, ref, client=client, progress=events.append)
    methods = sorted(m for m, _, _ in recorder.requests)
    assert methods == ["PUT"]  # blobs we put there are not asked about: the manifest is the one request
    assert {e.status for e in events if isinstance(e, BlobProgress)} == {"exists"}
    assert {e.digest for e in events if isinstance(e, BlobProgress)} == _blobs(image)


def test_a_blob_the_registry_lost_is_sent_again(registry: RunningRegistry,
                                                source: tuple[Store, StoredImage]) -> None:
    """The registry refuses a manifest whose blobs are gone (MANIFEST_BLOB_UNKNOWN): the blobs
    recorded as pushed are then asked about, the lost one sent again (here: mounted from another
    repository that holds it), and the manifest put."""
    import urllib.request

    store, image = source
    ref = Reference.parse(f"{registry.host}/lamina/lost:v1")
    push(store, image, ref)
    lost = image.manifest.layers[1].digest
    delete = urllib.request.Request(f"http://{registry.host}/v2/lamina/lost/blobs/{lost}", method="DELETE")
    assert urllib.request.urlopen(delete, timeout=10).status == 202
    recorder = Recorder()
    with recorder.client(registry.host) as client:
        push(store, image, ref, client=client)
    puts = [path for m, path, _ in recorder.requests if m == "PUT"]
    assert [p for p in puts if "/manifests/" in p] == ["/v2/lamina/lost/manifests/v1"] * 2  # refused, then put
    assert [m for m, _, _ in recorder.requests if m == "HEAD"] == ["HEAD"] * 3  # each recorded blob asked about
    posts = [query for m, _, query in recorder.requests if m == "POST"]
    assert len(posts) == 1 and f"mount={lost}".replace(":", "%3A") in posts[0]  # the lost one, from a sibling
    pulled = pull(Store(store.root.parent / "lost-pull"), ref)
    assert pulled.manifest_digest == image.manifest_digest


def test_cross_repository_mount(registry: RunningRegistry, source: tuple[Store, StoredImage]) -> None:
    store, image = source
    push(store, image, Reference.parse(f"{registry.host}/lamina/origin:v1"))
    recorder = Recorder()
    events: list[Event] = []
    ref = Reference.parse(f"{registry.host}/lamina/mounted:v1")
    with recorder.client(registry.host) as client:
        push(store, image, ref, client=client, progress=events.append)
    mounts = [q for m, _, q in recorder.requests if m == "POST" and "mount=" in q]
    assert len(mounts) == 3 and all("from=lamina%2F" in q and "mounted" not in q for q in mounts)
    assert recorder.uploads() == []
    assert {e.status for e in events if isinstance(e, BlobProgress)} == {"mounted"}
    assert [m for m, _, _ in recorder.requests if m == "HEAD"] == []  # a mount says it all in one round trip


# --- fewest round trips per blob (push.route) ---------------------------------------------

HOST = "reg.example:5000"


@pytest.mark.parametrize(("known", "size", "expected"), [
    ((), 10, (False, None)),                                    # recorded nowhere, small: upload unasked
    ((), SMALL_BLOB + 1, (True, None)),                         # recorded nowhere, big: HEAD first
    ((f"{HOST}/team/app",), SMALL_BLOB + 1, (True, None)),      # in the target: HEAD (it is likely there)
    ((f"{HOST}/team/base",), SMALL_BLOB + 1, (False, "team/base")),  # elsewhere on the registry: mount
    ((f"{HOST}/team/app", f"{HOST}/team/z", f"{HOST}/team/b"), 10, (True, "team/b")),  # HEAD, then mount
    (("docker.io/library/busybox", f"{HOST}5/x"), 10, (False, None)),  # other registries do not count
])
def test_route(known: tuple[str, ...], size: int, expected: tuple[bool, str | None]) -> None:
    assert route(known, Reference.parse(f"{HOST}/team/app:v1"), size) == expected


def test_small_blobs_recorded_nowhere_go_up_without_a_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           registry: RunningRegistry) -> None:
    # the module itself: the package's ``push`` is the function
    monkeypatch.setattr(importlib.import_module("lamina.transport.registry.push"), "SMALL_BLOB", 100_000)
    store = Store(tmp_path / "src")
    image = make_image(store, {"small": b"s" * 100}, {"big": os.urandom(150_000)})
    big = max(image.manifest.layers, key=lambda layer: layer.size)
    recorder = Recorder()
    with recorder.client(registry.host) as client:
        push(store, image, Reference.parse(f"{registry.host}/lamina/unasked:v1"), client=client)
    heads = [p for m, p, _ in recorder.requests if m == "HEAD"]
    assert heads == [f"/v2/lamina/unasked/blobs/{big.digest}"]
    assert len(recorder.uploads()) == 3  # both layers and the config
    assert pull(Store(tmp_path / "dest"), Reference.parse(f"{registry.host}/lamina/unasked:v1")).manifest_digest \
        == image.manifest_digest


def test_a_blob_missing_locally_is_still_mounted(tmp_path: Path, registry: RunningRegistry) -> None:
    store = Store(tmp_path / "src")
    image = make_image(store, {"etc/only-there": os.urandom(1000)})
    push(store, image, Reference.parse(f"{registry.host}/lamina/keeper:v1"))
    layer = image.manifest.layers[0].digest
    store.blobs.delete(layer)
    events: list[Event] = []
    push(store, image, Reference.parse(f"{registry.host}/lamina/borrower:v1"), progress=events.append)
    assert {(e.digest, e.status) for e in events if isinstance(e, BlobProgress)} >= {(layer, "mounted")}


def test_refused_mount_of_a_blob_the_repository_holds_uploads_nothing(tmp_path: Path,
                                                                      registry: RunningRegistry) -> None:
    """A recorded source that no longer holds the blob: the mount opens an upload, the HEAD then finds
    the blob in the target, and the upload is cancelled."""
    files = {"etc/hello": b"again\n"}
    first, second = Store(tmp_path / "one"), Store(tmp_path / "two")
    image, same = make_image(first, files), make_image(second, files)
    assert image.manifest_digest == same.manifest_digest
    ref = Reference.parse(f"{registry.host}/lamina/held:v1")
    push(first, image, ref)
    for digest in _blobs(same):
        second.db.add_source(f"{registry.host}/lamina/gone", str(digest))
    recorder = Recorder()
    events: list[Event] = []
    with recorder.client(registry.host) as client:
        push(second, same, ref, client=client, progress=events.append)
    methods = sorted(m for m, _, _ in recorder.requests)
    assert methods == ["DELETE", "DELETE", "HEAD", "HEAD", "POST", "POST", "PUT"]  # the PUT: the manifest
    assert {e.status for e in events if isinstance(e, BlobProgress)} == {"exists"}


def test_chunked_upload_above_the_threshold(tmp_path: Path, registry: RunningRegistry) -> None:
    store = Store(tmp_path / "src")
    image = make_image(store, {"big": os.urandom(150_000)})
    big = image.manifest.layers[0]
    recorder = Recorder()
    ref = Reference.parse(f"{registry.host}/lamina/chunked:v1")
    with recorder.client(registry.host) as client:
        push(store, image, ref, client=client, chunk_size=40_000)
    patches = [r for r in recorder.requests if r[0] == "PATCH"]
    assert len(patches) == -(-big.size // 40_000)
    assert len({q for _, _, q in patches}) == len(patches)  # each PATCH followed the last Location
    pulled = pull(Store(tmp_path / "dest"), ref)
    assert pulled.manifest_digest == image.manifest_digest


def test_skopeo_reads_what_we_pushed(registry: RunningRegistry, source: tuple[Store, StoredImage]) -> None:
    if not ensure_tool("/usr/bin/skopeo", "skopeo") or shutil.which("skopeo") is None:
        pytest.skip("skopeo is not available")
    store, image = source
    ref = Reference.parse(f"{registry.host}/lamina/skopeo:v1")
    push(store, image, ref)
    url = f"docker://{registry.host}/lamina/skopeo:v1"
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", url], capture_output=True, timeout=60, check=True)
    info = json.loads(out.stdout)
    assert info["Digest"] == str(image.manifest_digest)
    assert info["Layers"] == [str(layer.digest) for layer in image.manifest.layers]
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", url], capture_output=True,
                         timeout=60, check=True)
    assert raw.stdout == store.blobs.read(image.manifest_digest)


# --- htpasswd over TLS ----------------------------------------------------------------

USERS = {"alice": "wonder-land"}


@pytest.fixture(scope="module")
def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    try:
        with running_registry(tmp_path_factory.mktemp("secure"), users=USERS) as reg:
            yield reg
    except RuntimeError as exc:
        pytest.skip(str(exc))


def _secure_client(reg: RunningRegistry) -> RegistryClient:
    return RegistryClient(reg.host, credentials=CredentialStore(), insecure=False, ca_file=reg.ca_file, backoff=0.01)


def test_htpasswd_login_through_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              secure_registry: RunningRegistry,
                                              source: tuple[Store, StoredImage]) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    CredentialStore().login(secure_registry.host, "alice", USERS["alice"])
    store, image = source
    ref = Reference.parse(f"{secure_registry.host}/lamina/private:v1")
    with _secure_client(secure_registry) as client:
        push(store, image, ref, client=client)
        assert pull(Store(tmp_path / "dest"), ref, client=client).manifest_digest == image.manifest_digest


def test_wrong_password_is_a_one_line_auth_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 secure_registry: RunningRegistry) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    CredentialStore().login(secure_registry.host, "alice", "not-the-password")
    ref = Reference.parse(f"{secure_registry.host}/lamina/private:v1")
    with _secure_client(secure_registry) as client, pytest.raises(AuthError) as info:
        pull(Store(tmp_path / "dest"), ref, client=client)
    message = str(info.value)
    assert message.startswith(f"pulling {ref}: unauthorized") and info.value.status == 401
    assert "not-the-password" not in message and "\n" not in message


def test_no_credentials_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                secure_registry: RunningRegistry) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    with _secure_client(secure_registry) as client, pytest.raises(AuthError, match="no credentials"):
        pull(Store(tmp_path / "dest"), Reference.parse(f"{secure_registry.host}/lamina/private:v1"), client=client)


def test_untrusted_certificate_fails_fast(tmp_path: Path, secure_registry: RunningRegistry) -> None:
    with RegistryClient(secure_registry.host, insecure=False, backoff=5) as client, \
            pytest.raises(RegistryError, match="CERTIFICATE_VERIFY_FAILED"):
        pull(Store(tmp_path), Reference.parse(f"{secure_registry.host}/lamina/private:v1"), client=client)


# --- odd cases on a fake registry -------------------------------------------------------


def test_blob_missing_everywhere_is_a_store_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    image = make_image(store, {"a": b"1"})
    store.blobs.delete(image.manifest.layers[0].digest)
    mem = MemoryRegistry()
    with FakeRegistry(mem) as fake, pytest.raises(StoreError, match="in neither the registry nor the local store"):
        push(store, image, Reference.parse(f"{fake.host}/app:v1"))


def test_push_by_digest_must_name_the_image(tmp_path: Path) -> None:
    store = Store(tmp_path)
    image = make_image(store, {"a": b"1"})
    mem = MemoryRegistry()
    with FakeRegistry(mem) as fake:
        result = push(store, image, Reference.parse(f"{fake.host}/app@{image.manifest_digest}"))
        assert result.digest == image.manifest_digest
        assert ("app", str(image.manifest_digest)) in mem.manifests
        with pytest.raises(RegistryError, match="the image's manifest is"):
            push(store, image, Reference.parse(f"{fake.host}/app@sha256:{'0' * 64}"))
