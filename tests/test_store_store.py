"""The store facade: writing images, and finding them by tag, ID, prefix and digest."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.errors import ImageNotFound, ReferenceError_, StoreError
from lamina.image.image import Image, Layer, append_layer, scratch
from lamina.image.layerio import LayerSink
from lamina.oci import mediatype as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage

AMD64 = Platform("linux", "amd64")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer(store: Store, files: dict[str, bytes]) -> Layer:
    with store.blobs.writer() as w:
        sink = LayerSink(w, "gzip")
        sink.write(_tar(files))
        sink.close()
        digest = w.commit(sync=False)
    return Layer(Descriptor(mt.DOCKER_LAYER_GZIP, digest, w.size), sink.diff_id)


def _image(store: Store, marker: str) -> Image:
    image = scratch(AMD64)
    return append_layer(image, _layer(store, {"marker": marker.encode()}), History(created_by=f"COPY {marker}"))


def _put(store: Store, marker: str, *tags: str) -> StoredImage:
    stored = store.put_image(_image(store, marker))
    for tag in tags:
        store.tag(Reference.parse(tag), stored.manifest_digest)
    return stored


def test_layout_on_disk(store: Store) -> None:
    for name in ("oci-layout", "index.json", "blobs/sha256", "tmp", "snapshots", "lamina.db"):
        assert (store.root / name).exists(), name


@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
def test_put_image_writes_blobs_and_rows(store: Store, oci: bool) -> None:
    image = _image(store, "a")
    stored = store.put_image(image, oci=oci)
    assert stored.image.config == image.config
    assert [(lay.digest, lay.diff_id) for lay in stored.image.layers] == [(lay.digest, lay.diff_id)
                                                                          for lay in image.layers]
    assert tuple(lay.desc for lay in stored.image.layers) == stored.manifest.layers  # as the manifest says
    assert stored.id == stored.config_digest == stored.manifest.config.digest
    assert store.blobs.read(stored.config_digest) == image.config.encode()
    manifest_bytes = store.blobs.read(stored.manifest_digest)
    assert Digest.of(manifest_bytes) == stored.manifest_digest
    assert stored.manifest.media_type == (mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST)
    assert stored.manifest.config.media_type == (mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG)
    assert [d.media_type for d in stored.manifest.layers] == [mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP]
    assert store.db.image(str(stored.manifest_digest)) == (str(stored.config_digest), stored.manifest.media_type)
    layer = image.layers[0]
    assert store.db.layer(str(layer.digest)) == (str(layer.diff_id), stored.manifest.layers[0].media_type, layer.size)
    again = store.get(stored.manifest_digest)
    assert again == stored


def test_put_image_is_idempotent(store: Store) -> None:
    image = _image(store, "a")
    assert store.put_image(image) == store.put_image(image)
    assert len(store.db.images()) == 1


def test_put_image_refuses_missing_layer_blobs(store: Store) -> None:
    image = _image(store, "a")
    missing = image.layers[0].digest
    store.blobs.delete(missing)
    before = sorted(store.blobs.digests())
    with pytest.raises(StoreError, match=f"layer {missing} of the image is not in the store"):
        store.put_image(image)
    assert sorted(store.blobs.digests()) == before  # no config or manifest written
    assert store.db.images() == []


def test_put_manifest_bytes_rebuilds_the_image(store: Store) -> None:
    stored = store.put_image(_image(store, "a"))
    raw = store.blobs.read(stored.manifest_digest)
    assert store.put_manifest_bytes(raw).image == stored.image


def test_put_manifest_bytes_refuses_an_index(store: Store) -> None:
    index = Index((Descriptor(mt.OCI_MANIFEST, Digest.of(b"m"), 1),))
    with pytest.raises(StoreError, match="got an index"):
        store.put_manifest_bytes(index.encode())


def test_layer_count_mismatch(store: Store) -> None:
    stored = store.put_image(_image(store, "a"))
    manifest = Manifest(stored.manifest.config, stored.manifest.layers * 2)
    with pytest.raises(StoreError, match="image config lists 1 layers, manifest 2"):
        store.put_manifest_bytes(manifest.encode())


def test_get_unknown_and_index(store: Store) -> None:
    with pytest.raises(ImageNotFound):
        store.get(Digest.of(b"nothing"))
    data = Index(()).encode()
    digest = store.blobs.put(data)
    store.db.add_image(str(digest), str(digest), mt.OCI_INDEX)
    with pytest.raises(StoreError, match="is an index, not an image"):
        store.get(digest)


@pytest.fixture
def two_images(store: Store) -> tuple[StoredImage, StoredImage]:
    a = _put(store, "a", "app:1", "localhost:5000/team/app:v1")
    b = _put(store, "b", "app:latest")
    assert a.id.hex[:4] != b.id.hex[:4]
    return a, b


# how to name it → which image ("a", "b") or None
def _lookups(a: StoredImage, b: StoredImage) -> list[tuple[str, str | None]]:
    return [
        ("app:1", "a"),
        ("docker.io/library/app:1", "a"),
        ("index.docker.io/library/app:1", "a"),
        ("localhost:5000/team/app:v1", "a"),
        ("app", "b"),  # :latest
        ("app:latest", "b"),
        (str(a.id), "a"),  # full image ID
        (a.id.hex, "a"),
        (a.id.hex[:12], "a"),  # what `docker images` shows
        ("sha256:" + a.id.hex[:12], "a"),
        (b.id.hex[:5], "b"),
        (str(b.manifest_digest), "b"),
        (f"app@{a.manifest_digest}", "a"),
        (f"docker.io/library/app@{b.manifest_digest}", "b"),
        ("app:2", None),
        ("other", None),
        ("sha256:" + "0" * 64, None),
        ("0" * 64, None),
        ("0" * 12, None),
        (f"app@sha256:{'0' * 64}", None),
    ]


def test_lookup_table(store: Store, two_images: tuple[StoredImage, StoredImage]) -> None:
    a, b = two_images
    by_name = {"a": a, "b": b}
    for name, expected in _lookups(a, b):
        found = store.lookup(name)
        assert found == (by_name[expected] if expected else None), name


def test_resolve(store: Store, two_images: tuple[StoredImage, StoredImage]) -> None:
    assert store.resolve("app:1") == two_images[0]
    with pytest.raises(ImageNotFound, match="no such image: nope:1"):
        store.resolve("nope:1")


def test_ambiguous_prefix(store: Store) -> None:
    store.db.add_image("sha256:abcd1" + "0" * 59, "sha256:abcd2" + "0" * 59, mt.DOCKER_MANIFEST)
    store.db.add_image("sha256:abcd3" + "0" * 59, "sha256:abcd4" + "0" * 59, mt.DOCKER_MANIFEST)
    with pytest.raises(StoreError, match="ambiguous image ID prefix 'abcd'"):
        store.lookup("abcd")
    with pytest.raises(StoreError, match="ambiguous"):
        store.lookup("sha256:abcd")


def test_manifests_of_one_config_are_not_ambiguous(store: Store) -> None:
    image = _image(store, "a")
    docker, oci = store.put_image(image), store.put_image(image, oci=True)
    assert docker.id == oci.id and docker.manifest_digest != oci.manifest_digest
    assert store.lookup(docker.id.hex[:12]) in (docker, oci)


def test_a_tag_wins_over_a_short_prefix(store: Store) -> None:
    tagged = _put(store, "a", "cafe")
    store.db.add_image("sha256:cafe" + "0" * 60, "sha256:cafe" + "1" * 60, mt.DOCKER_MANIFEST)
    assert store.lookup("cafe") == tagged


def test_invalid_name_raises(store: Store) -> None:
    with pytest.raises(ReferenceError_):
        store.lookup("Not A Name")


def test_tags(store: Store, two_images: tuple[StoredImage, StoredImage]) -> None:
    a, b = two_images
    assert [str(r) for r in store.tags_of(a.manifest_digest)] == ["docker.io/library/app:1",
                                                                  "localhost:5000/team/app:v1"]
    store.tag(Reference.parse("app:1"), b.manifest_digest)  # moves
    assert store.resolve("app:1") == b
    assert store.untag(Reference.parse("app:1")) is True
    assert store.untag(Reference.parse("app:1")) is False
    assert store.lookup("app:1") is None
    with pytest.raises(ImageNotFound):
        store.tag(Reference.parse("x"), Digest.of(b"not an image"))


def test_snapshot_path(store: Store) -> None:
    d = Digest.of(b"x")
    assert store.snapshot_path(d) == store.root / "snapshots" / d.hex


# -- docker's lookup order and layer sizes (p10: images workflow) ---------------------------------

def test_a_twelve_char_tag_wins_over_an_id_prefix(store: Store) -> None:
    """docker: a full ID, then tags, and only then a short ID prefix (even one of 12+ chars)."""
    other = _put(store, "other")
    tagged = _put(store, "tagged", other.id.hex[:12])
    assert store.lookup(other.id.hex[:12]) == tagged
    assert store.lookup(other.id.hex[:13]) == other  # no such tag: the prefix
    assert store.lookup(str(other.id)) == other and store.lookup(other.id.hex) == other  # full IDs first


def test_ambiguous_prefix_names_the_candidates(store: Store) -> None:
    store.db.add_image("sha256:beef1" + "0" * 59, "sha256:beef2" + "0" * 59, mt.DOCKER_MANIFEST)
    store.db.add_image("sha256:beef3" + "0" * 59, "sha256:beef4" + "0" * 59, mt.DOCKER_MANIFEST)
    with pytest.raises(StoreError, match=r"ambiguous image ID prefix 'beef': it matches 2 images \(beef2"):
        store.lookup("beef")


def test_layer_size_is_the_recorded_size_else_counted_once(store: Store) -> None:
    stored = _put(store, "sized")
    layer = stored.image.layers[0]
    assert store.layer_size(layer) == len("sized")  # counted from the blob: the file's bytes
    assert store.db.diff_size(str(layer.digest)) == len("sized")  # and recorded
    store.db.add_layer("sha256:" + "1" * 64, str(layer.diff_id), layer.desc.media_type, 10, 1234)
    assert store.layer_size(Layer(Descriptor(mt.DOCKER_LAYER_GZIP, Digest.parse("sha256:" + "1" * 64), 10),
                                  layer.diff_id)) == 1234
    missing = Layer(Descriptor(mt.DOCKER_LAYER_GZIP, Digest.of(b"gone"), 77), layer.diff_id)
    assert store.layer_size(missing) == 77  # no blob to count: the compressed size, as before


def test_put_manifest_bytes_records_given_sizes(store: Store) -> None:
    image = _image(store, "given")
    stored = store.put_image(image)
    again = store.put_manifest_bytes(store.blobs.read(stored.manifest_digest),
                                     sizes={stored.image.layers[0].digest: 999})
    assert store.db.diff_size(str(again.image.layers[0].digest)) == 999


def test_a_repo_digest_names_the_image_pulled_by_it(store: Store) -> None:
    stored = _put(store, "pulled")
    index_digest = Digest.of(b"an index listing the image")
    store.db.add_repo_digest(str(stored.manifest_digest), "docker.io/library/app", str(index_digest))
    assert store.lookup(f"app@{index_digest}") == stored
    assert store.lookup(f"other@{index_digest}") is None  # another repository's digest


def test_a_lookup_decodes_the_config_only_when_the_image_is_used(store: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.oci import config as config_module

    stored = _put(store, "lazy", "lazy:1")
    decoded: list[bytes] = []
    real = config_module.ImageConfig.decode
    monkeypatch.setattr(config_module.ImageConfig, "decode",
                        staticmethod(lambda data: (decoded.append(data), real(data))[1]))
    found = store.resolve("lazy:1")
    assert decoded == [] and found.manifest.layers == stored.manifest.layers  # push reads only this
    assert found == stored  # equal by digests and manifest, decoded or not
    assert found.image.layers == stored.image.layers and found.image is found.image
    assert len(decoded) == 1  # once, then kept


def test_a_corrupt_config_fails_when_the_image_is_used(store: Store) -> None:
    stored = _put(store, "bad", "bad:1")
    config = store.blobs.path(stored.config_digest)
    config.chmod(0o644)
    config.write_bytes(b'{"rootfs": {"type": "layers", "diff_ids": []}}')  # no longer matches the manifest
    found = store.resolve("bad:1")
    with pytest.raises(StoreError, match="image config lists 0 layers, manifest 1"):
        found.image  # noqa: B018
