"""Unit tests for lamina.transport.importer: layer ingestion, plans, ``docker import``."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from lamina.errors import DigestMismatch, DockerfileError, LaminaError, LayerError
from lamina.oci import mediatype as mt
from lamina.oci.config import ContainerConfig
from lamina.oci.descriptor import Platform
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference
from lamina.store import Store
from lamina.transport.importer import (
    Ingested,
    Members,
    Planned,
    apply_changes,
    created_now,
    import_rootfs,
    ingest_layer,
    member_key,
    prepare,
)


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR = rootfs_tar({"bin/hello": b"#!/bin/sh\necho hello\n", "etc/motd": b"hi\n"})
DIFF_ID = Digest.of(TAR)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


# -- ingest_layer ----------------------------------------------------------------------------

@pytest.mark.parametrize(("compress", "kept"), [
    (gzip.compress, True),
    (lambda b: zstandard.ZstdCompressor().compress(b), True),
    (bz2.compress, False),
    (lzma.compress, False),
    (lambda b: b, False),
])
def test_ingest_layer_hashes_raw_and_plain_bytes(store: Store, compress, kept: bool) -> None:  # type: ignore[no-untyped-def]
    raw = compress(TAR)
    got = ingest_layer(store, io.BytesIO(raw))
    assert got.diff_id == DIFF_ID
    assert (got.raw_digest, got.raw_size) == (Digest.of(raw), len(raw))
    assert got.unchanged is kept
    assert got.content_size == len(b"#!/bin/sh\necho hello\n") + len(b"hi\n")  # docker's size, counted on the way
    blob = store.blobs.read(got.digest)
    assert len(blob) == got.size
    if not kept:
        assert got.compression == "gzip" and gzip.decompress(blob) == TAR


def test_import_records_dockers_layer_size(store: Store) -> None:
    stored = import_rootfs(store, io.BytesIO(gzip.compress(TAR)), Reference.parse("sized:1"))
    assert store.db.diff_size(str(stored.image.layers[0].digest)) == 24


def test_ingest_layer_recompression_is_deterministic(store: Store) -> None:
    first = ingest_layer(store, io.BytesIO(TAR))
    second = ingest_layer(store, io.BytesIO(bz2.compress(TAR)))
    assert first.digest == second.digest


def test_ingest_layer_expected_digest_mismatch_stores_nothing(store: Store) -> None:
    before = set(store.blobs.digests())
    with pytest.raises(DigestMismatch):
        ingest_layer(store, io.BytesIO(TAR), expected=Digest.of(b"other"))
    assert set(store.blobs.digests()) == before
    assert not any((store.root / "tmp").iterdir())


def test_ingest_layer_corrupt_gzip_is_a_layer_error(store: Store) -> None:
    with pytest.raises(LayerError):
        ingest_layer(store, io.BytesIO(gzip.compress(TAR)[:-20] + b"x" * 20))
    assert not any((store.root / "tmp").iterdir())


# -- members and plans -----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "key"), [
    ("manifest.json", "manifest.json"),
    ("./manifest.json", "manifest.json"),
    ("/abs/x", "abs/x"),
    ("../../etc/passwd", "etc/passwd"),
    ("a/./b/../c", "a/c"),
    ("blobs/sha256/", "blobs/sha256"),
])
def test_member_key(name: str, key: str) -> None:
    assert member_key(name) == key


def _ingested(diff_id: Digest) -> Ingested:
    return Ingested(diff_id, 10, diff_id, 10, diff_id, "gzip")


def test_members_lookup_follows_links_and_names_what_is_missing() -> None:
    layer = _ingested(DIFF_ID)
    members = Members({"c.json": b"{}"}, {"a/layer.tar": layer}, {"b/layer.tar": "a/layer.tar", "x": "y", "y": "x"})
    assert members.layer("./b/layer.tar", "layer") is layer
    with pytest.raises(LaminaError, match="layer 'nope' is missing"):
        members.layer("nope", "layer")
    with pytest.raises(LaminaError, match="not a layer"):
        members.layer("c.json", "layer")
    with pytest.raises(LaminaError, match="is a layer"):
        members.file("a/layer.tar", "config")
    with pytest.raises(LaminaError, match="too many links"):
        members.file("x", "config")


def _config(diff_ids: list[Digest]) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]}}).encode()


def test_prepare_checks_diff_ids() -> None:
    layer = _ingested(DIFF_ID)
    image, manifest = prepare(Planned(_config([DIFF_ID]), (layer,), False, ()))
    assert image.layers[0].diff_id == DIFF_ID
    assert json.loads(manifest)["mediaType"] == mt.DOCKER_MANIFEST
    with pytest.raises(DigestMismatch, match="layer 0"):
        prepare(Planned(_config([Digest.of(b"x")]), (layer,), False, ()))
    with pytest.raises(LaminaError, match="lists 2 layers"):
        prepare(Planned(_config([DIFF_ID, DIFF_ID]), (layer,), False, ()))


# -- import_rootfs -----------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, lzma.compress])
def test_import_rootfs_makes_one_gzip_layer(store: Store, compress, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ref = Reference.parse("example.com/rootfs:v1")
    stored = import_rootfs(store, io.BytesIO(compress(TAR)), ref,
                           changes=["ENV PATH=/bin", 'CMD ["/bin/sh"]'])
    assert store.resolve("example.com/rootfs:v1").manifest_digest == stored.manifest_digest
    (layer,) = stored.image.layers
    assert layer.diff_id == DIFF_ID
    assert layer.desc.media_type == mt.DOCKER_LAYER_GZIP
    assert store.blobs.read(layer.digest)[:2] == b"\x1f\x8b"
    config = json.loads(store.blobs.read(stored.config_digest))
    host = Platform.host()
    assert (config["os"], config["architecture"]) == (host.os, host.architecture)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["history"] == [{"created": "2023-11-14T22:13:20Z", "comment": "Imported from -"}]
    assert config["comment"] == "Imported from -"
    assert config["config"] == {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}
    assert config["rootfs"] == {"type": "layers", "diff_ids": [str(DIFF_ID)]}


def test_import_rootfs_from_path_untagged_with_message(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "rootfs.tar"
    path.write_bytes(TAR)
    stored = import_rootfs(store, path, None, message="my import", platform=Platform("linux", "arm64", "v8"))
    config = json.loads(store.blobs.read(stored.config_digest))
    assert config["history"][0]["comment"] == "my import"
    assert (config["architecture"], config["variant"]) == ("arm64", "v8")
    assert store.tags_of(stored.manifest_digest) == []


def test_import_rootfs_bad_change_stores_no_image(store: Store) -> None:
    with pytest.raises(DockerfileError, match="only ENV and CMD"):
        import_rootfs(store, io.BytesIO(TAR), None, changes=["RUN true"])
    assert store.db.images() == []


@pytest.mark.parametrize(("changes", "env", "cmd"), [
    (["ENV A=1 B=two"], ("A=1", "B=two"), ()),
    (['ENV A="hello world"'], ("A=hello world",), ()),
    (["ENV A legacy value"], ("A=legacy value",), ()),
    (["ENV A=1", "env A=2"], ("A=2",), ()),
    (['CMD ["echo", "hi"]'], (), ("echo", "hi")),
    (["CMD echo hi"], (), ("/bin/sh", "-c", "echo hi")),
    (["CMD [not json"], (), ("/bin/sh", "-c", "[not json")),
])
def test_apply_changes(changes: list[str], env: tuple[str, ...], cmd: tuple[str, ...]) -> None:
    config = apply_changes(ContainerConfig(), changes)
    assert (config.env, config.cmd) == (env, cmd)


@pytest.mark.parametrize("line", ["ENV", "ENV =x", "CMD", "ENV A='unterminated", "EXPOSE 80"])
def test_apply_changes_rejects(line: str) -> None:
    with pytest.raises(DockerfileError):
        apply_changes(ContainerConfig(), [line])


def test_created_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert created_now(datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)) == "2024-01-02T03:04:05.12Z"
    assert created_now(datetime(2024, 1, 2, tzinfo=UTC)) == "2024-01-02T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert created_now() == "1970-01-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(LaminaError):
        created_now()

