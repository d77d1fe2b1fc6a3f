"""Tests for lamina.transport.archive: save and load through real tar streams."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import lzma
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lamina.errors import DigestMismatch, ImageNotFound, LaminaError
from lamina.image.image import Layer, append_layer, scratch
from lamina.oci import mediatype as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, encode_json
from lamina.oci.reference import Reference
from lamina.store import Store, StoredImage
from lamina.transport.archive import load, save
from lamina.transport.importer import ingest_layer

CONFORMANCE = Path("/work/shared/conformance")
BUSYBOX = CONFORMANCE / "base" / "busybox.tar"
BUSYBOX_REF = "127.0.0.1:5000/busybox:latest"
BUSYBOX_DIFF_ID = "sha256:3cee9c3321a4b4742209b0778427bd906e03b8e3531d547b5c079bf731af339b"
needs_busybox = pytest.mark.skipif(not BUSYBOX.exists(), reason="conformance base image not available")


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(store: Store, layers: list[dict[str, bytes]], *tags: str) -> StoredImage:
    image = scratch(Platform("linux", "amd64"))
    for files in layers:
        got = ingest_layer(store, io.BytesIO(layer_tar(files)))
        desc = Descriptor(mt.DOCKER_LAYER_GZIP, got.digest, got.size)
        image = append_layer(image, Layer(desc, got.diff_id), History(created_by="test"))
    stored = store.put_image(image)
    for tag in tags:
        store.tag(Reference.parse(tag), stored.manifest_digest)
    return stored


def tar_of(members: list[tuple[str, bytes | str]]) -> bytes:
    """An archive from (name, bytes) files and (name, "->target") symlinks, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data.removeprefix("->")
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_of(*diff_ids: Digest, cmd: list[str] | None = None) -> bytes:
    return encode_json({"architecture": "amd64", "os": "linux", "config": {"Cmd": cmd or ["/bin/sh"]},
                        "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]}})


def checker() -> ModuleType:
    path = CONFORMANCE / "check.py"
    if not path.exists():
        pytest.skip("conformance checker not available")
    spec = importlib.util.spec_from_file_location("conformance_check", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture
def fresh(tmp_path: Path) -> Store:
    return Store(tmp_path / "fresh")


# -- the conformance base image -----------------------------------------------------------------

@needs_busybox
def test_load_conformance_busybox(store: Store) -> None:
    ((image, refs),) = load(store, BUSYBOX)
    assert [str(r) for r in refs] == [BUSYBOX_REF]
    assert store.resolve(BUSYBOX_REF).manifest_digest == image.manifest_digest
    assert str(image.config_digest) == "sha256:75f0549d9c54bb5d300382fcaf0a865f9a1c3ad6d2d3494b7e1bdf69b7d0863f"
    assert [str(layer.diff_id) for layer in image.image.layers] == [BUSYBOX_DIFF_ID]
    assert image.image.config.config.cmd == ("/bin/sh",)
    assert image.image.config.config.env == ("PATH=/bin",)
    (layer,) = image.image.layers
    assert layer.desc.media_type == mt.DOCKER_LAYER_GZIP
    assert store.blobs.read(layer.digest)[:2] == b"\x1f\x8b"


@needs_busybox
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_conformance_checker_reads_what_we_save(store: Store, tmp_path: Path, fmt: Any) -> None:
    check = checker()
    load(store, BUSYBOX)
    out = tmp_path / "out.tar"
    save(store, [BUSYBOX_REF], out, format=fmt)
    view = check.load_archive(str(out))
    assert view == check.load_archive(str(BUSYBOX))
    assert view["config"]["Cmd"] == ["/bin/sh"] and view["layers"] == 1


# -- round trips ----------------------------------------------------------------------------------

def test_docker_archive_round_trip_keeps_manifest_digests(store: Store, fresh: Store) -> None:
    base = make_image(store, [{"a": b"1"}, {"b": b"2"}], "example.com/app:v1", "app:latest")
    other = make_image(store, [{"a": b"1"}, {"c": b"3"}])  # shares a layer; saved by ID only
    out = io.BytesIO()
    save(store, ["example.com/app:v1", "app", other.config_digest.hex[:12], "app:latest"], out)
    manifest_json = json.loads(_member(out.getvalue(), "manifest.json"))
    assert [m["RepoTags"] for m in manifest_json] == [["example.com/app:v1", "app:latest"], []]
    assert json.loads(_member(out.getvalue(), "repositories")) == {
        "example.com/app": {"v1": base.manifest.layers[-1].digest.hex},
        "app": {"latest": base.manifest.layers[-1].digest.hex}}
    loaded = load(fresh, io.BytesIO(out.getvalue()))
    assert [(i.manifest_digest, [str(r) for r in refs]) for i, refs in loaded] == [
        (base.manifest_digest, ["example.com/app:v1", "docker.io/library/app:latest"]),
        (other.manifest_digest, [])]
    assert fresh.resolve("app").config_digest == base.config_digest


def test_oci_archive_round_trip_keeps_config_digest(store: Store, fresh: Store) -> None:
    image = make_image(store, [{"a": b"1"}], "example.com/app:v1")
    out = io.BytesIO()
    save(store, ["example.com/app:v1"], out, format="oci-archive")
    index = json.loads(_member(out.getvalue(), "index.json"))
    (desc,) = index["manifests"]
    assert desc["mediaType"] == mt.OCI_MANIFEST
    assert desc["annotations"] == {"io.containerd.image.name": "example.com/app:v1",
                                   "org.opencontainers.image.ref.name": "v1"}
    ((loaded, refs),) = load(fresh, io.BytesIO(out.getvalue()))
    assert loaded.config_digest == image.config_digest
    assert loaded.manifest.media_type == mt.OCI_MANIFEST
    assert loaded.manifest.config.media_type == mt.OCI_CONFIG
    assert [d.digest for d in loaded.manifest.layers] == [d.digest for d in image.manifest.layers]
    assert loaded.manifest_digest == Digest.parse(desc["digest"]) != image.manifest_digest
    assert [str(r) for r in refs] == ["example.com/app:v1"]


def test_save_is_deterministic_and_loads_in_any_member_order(store: Store, fresh: Store) -> None:
    make_image(store, [{"a": b"1"}], "app:v1")
    first, second = io.BytesIO(), io.BytesIO()
    save(store, ["app:v1"], first)
    save(store, ["app:v1"], second)
    assert first.getvalue() == second.getvalue()
    with tarfile.open(fileobj=io.BytesIO(first.getvalue())) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]
    assert load(fresh, io.BytesIO(tar_of(members[::-1])))[0][1] == [Reference.parse("app:v1")]


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_load_compressed_outer_archive(store: Store, fresh: Store, compress: Any) -> None:
    image = make_image(store, [{"a": b"1"}], "app:v1")
    out = io.BytesIO()
    save(store, ["app:v1"], out)
    ((loaded, _),) = load(fresh, io.BytesIO(compress(out.getvalue())))
    assert loaded.manifest_digest == image.manifest_digest


def test_save_to_path_replaces_atomically(store: Store, tmp_path: Path) -> None:
    make_image(store, [{"a": b"1"}], "app:v1")
    out = tmp_path / "app.tar"
    save(store, ["app:v1"], out)
    assert tarfile.is_tarfile(out)
    with pytest.raises(ImageNotFound):
        save(store, ["app:v1", "missing:v1"], out)
    assert tarfile.is_tarfile(out) and sorted(p.name for p in tmp_path.iterdir()) == ["app.tar", "store"]
    with pytest.raises(LaminaError, match="no images"):
        save(store, [], out)
    with pytest.raises(LaminaError, match="unknown archive format"):
        save(store, ["app:v1"], out, format="tarball")  # type: ignore[arg-type]


def test_save_refuses_a_corrupt_store_blob(store: Store, tmp_path: Path) -> None:
    image = make_image(store, [{"a": b"1"}], "app:v1")
    path = store.blobs.path(image.manifest.layers[0].digest)
    path.write_bytes(b"x" * path.stat().st_size)
    with pytest.raises(DigestMismatch, match="corrupt"):
        save(store, ["app:v1"], tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


# -- loading: layouts -----------------------------------------------------------------------------

def test_load_old_layout_with_symlinked_layer(store: Store) -> None:
    tar = layer_tar({"a": b"1"})
    diff_id = Digest.of(tar)
    manifest = [{"Config": "c.json", "RepoTags": ["app:v1"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}]
    archive = tar_of([("manifest.json", encode_json(manifest)), ("l1/VERSION", b"1.0"), ("l1/json", b"{}"),
                      ("l1/layer.tar", tar), ("l2/layer.tar", "->../l1/layer.tar"),
                      ("c.json", config_of(diff_id, diff_id))])
    ((image, refs),) = load(store, io.BytesIO(archive))
    assert [layer.diff_id for layer in image.image.layers] == [diff_id, diff_id]
    assert refs == [Reference.parse("app:v1")]


def _oci_archive(manifests: list[Descriptor], blobs: list[bytes]) -> bytes:
    index = Index(tuple(manifests)).encode()
    members: list[tuple[str, bytes | str]] = [(f"blobs/sha256/{Digest.of(b).hex}", b) for b in blobs]
    return tar_of([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index), *members])


def _oci_image(layer: bytes, media_type: str = mt.OCI_LAYER) -> tuple[bytes, list[bytes]]:
    config = config_of(Digest.of(gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer))
    manifest = Manifest(Descriptor(mt.OCI_CONFIG, Digest.of(config), len(config)),
                        (Descriptor(media_type, Digest.of(layer), len(layer)),), mt.OCI_MANIFEST).encode()
    return manifest, [config, layer, manifest]


def test_load_oci_plain_layers_are_compressed_and_bare_tags_leave_the_image_untagged(store: Store) -> None:
    manifest, blobs = _oci_image(layer_tar({"a": b"1"}))
    desc = Descriptor(mt.OCI_MANIFEST, Digest.of(manifest), len(manifest),
                      annotations={"org.opencontainers.image.ref.name": "latest"})
    ((image, refs),) = load(store, io.BytesIO(_oci_archive([desc], blobs)))
    assert refs == [] and store.tags_of(image.manifest_digest) == []
    (layer,) = image.manifest.layers
    assert layer.media_type == mt.OCI_LAYER_GZIP and image.manifest_digest != desc.digest


def test_load_oci_full_ref_name_and_nested_index_for_the_host(store: Store) -> None:
    host = Platform.host()
    manifest, blobs = _oci_image(gzip.compress(layer_tar({"a": b"1"})), mt.OCI_LAYER_GZIP)
    other, other_blobs = _oci_image(gzip.compress(layer_tar({"b": b"2"})), mt.OCI_LAYER_GZIP)
    inner = Index((Descriptor(mt.OCI_MANIFEST, Digest.of(other), len(other), platform=Platform("linux", "s390x")),
                   Descriptor(mt.OCI_MANIFEST, Digest.of(manifest), len(manifest), platform=host))).encode()
    desc = Descriptor(mt.OCI_INDEX, Digest.of(inner), len(inner),
                      annotations={"org.opencontainers.image.ref.name": "example.com/app:v2"})
    ((image, refs),) = load(store, io.BytesIO(_oci_archive([desc], [*blobs, *other_blobs, inner])))
    assert image.manifest_digest == Digest.of(manifest)  # layers kept as is: exact manifest bytes
    assert refs == [Reference.parse("example.com/app:v2")]


# -- loading: broken and hostile archives ---------------------------------------------------------

def _docker_archive(config: bytes, layers: dict[str, bytes], *, tags: tuple[str, ...] = ("app:v1",),
                    names: list[str] | None = None, config_name: str = "c.json") -> bytes:
    manifest = [{"Config": config_name, "RepoTags": list(tags), "Layers": names or list(layers)}]
    return tar_of([*layers.items(), ("c.json", config), ("manifest.json", encode_json(manifest))])


def test_load_wrong_diff_id_fails_and_tags_nothing(store: Store) -> None:
    good = layer_tar({"a": b"1"})
    archive = tar_of([("ok.json", config_of(Digest.of(good))), ("bad.json", config_of(Digest.of(b"other"))),
                      ("l.tar", good),
                      ("manifest.json", encode_json([
                          {"Config": "ok.json", "RepoTags": ["good:v1"], "Layers": ["l.tar"]},
                          {"Config": "bad.json", "RepoTags": ["bad:v1"], "Layers": ["l.tar"]}]))])
    with pytest.raises(DigestMismatch, match="diff_id"):
        load(store, io.BytesIO(archive))
    assert store.db.tags() == [] and store.db.images() == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"names": ["missing/layer.tar"]}, "layer 0 of image 0 'missing/layer.tar' is missing"),
    ({"config_name": "/etc/passwd"}, "config of image 0 '/etc/passwd' is missing"),
    ({"config_name": "../../../l.tar"}, "is a layer"),
    ({"tags": ("Bad:Name",)}, "invalid reference"),
])
def test_load_bad_docker_manifest(store: Store, kwargs: Any, message: str) -> None:
    tar = layer_tar({"a": b"1"})
    with pytest.raises(LaminaError, match=message):
        load(store, io.BytesIO(_docker_archive(config_of(Digest.of(tar)), {"l.tar": tar}, **kwargs)))
    assert store.db.tags() == []


def test_load_member_names_are_never_paths(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tar = layer_tar({"a": b"1"})
    archive = _docker_archive(config_of(Digest.of(tar)), {"../../escape.tar": tar, "/abs.tar": tar},
                              names=["escape.tar"])
    ((image, _),) = load(store, io.BytesIO(archive))
    assert image.image.layers[0].diff_id == Digest.of(tar)
    assert not list(tmp_path.glob("**/escape.tar")) and not Path("/abs.tar").exists()


def test_load_blob_named_by_a_wrong_digest(store: Store) -> None:
    archive = tar_of([(f"blobs/sha256/{'0' * 64}", b'{"not": "this"}')])
    with pytest.raises(DigestMismatch):
        load(store, io.BytesIO(archive))
    with pytest.raises(LaminaError, match="not a digest"):
        load(store, io.BytesIO(tar_of([("blobs/sha256/xyz", b"{}")])))


def test_load_oci_descriptor_size_mismatch(store: Store) -> None:
    manifest, blobs = _oci_image(gzip.compress(layer_tar({"a": b"1"})), mt.OCI_LAYER_GZIP)
    desc = Descriptor(mt.OCI_MANIFEST, Digest.of(manifest), len(manifest) + 1)
    with pytest.raises(DigestMismatch, match="size or digest"):
        load(store, io.BytesIO(_oci_archive([desc], blobs)))


@pytest.mark.parametrize(("data", "message"), [
    (tar_of([("hello.txt", b"hi")]), "neither manifest.json"),
    (b"this is not a tar archive at all" * 40, "reading archive"),
    (tar_of([("manifest.json", b"{}")]), "not a list"),
    (tar_of([("manifest.json", b"[]")]), "no images"),
    (tar_of([("manifest.json", b"[{")]), "malformed manifest.json"),
])
def test_load_rejects_malformed_archives(store: Store, data: bytes, message: str) -> None:
    with pytest.raises(LaminaError, match=message):
        load(store, io.BytesIO(data))


def _member(archive: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()
