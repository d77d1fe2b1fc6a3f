"""`lamina history`: rows newest first, each history entry paired with its layer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lamina.history import HistoryRow, image_history
from lamina.image.image import Image, Layer, add_history, append_layer, scratch
from lamina.image.layerio import LayerSink
from lamina.oci import mediatype as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor, Platform
from lamina.store.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def _layer(store: Store, content: bytes) -> Layer:
    with store.blobs.writer() as w:
        sink = LayerSink(w, "gzip")
        sink.write(content)  # not a tar: history never opens layers
        sink.close()
        digest = w.commit(sync=False)
    return Layer(Descriptor(mt.DOCKER_LAYER_GZIP, digest, w.size), sink.diff_id)


# (created_by, makes a layer?) oldest first
STEPS = [
    ("ADD rootfs.tar /", True),
    ('CMD ["sh"]', False),
    ("ENV A=1", False),
    ("RUN make", True),
    ("COPY app /app", True),
    ("LABEL v=1", False),
]


def _image(store: Store) -> tuple[Image, list[Layer]]:
    image = scratch(Platform("linux", "amd64"))
    layers = []
    for n, (text, has_layer) in enumerate(STEPS):
        entry = History(created_by=text, created=f"2024-01-0{n + 1}T00:00:00Z", comment=f"c{n}")
        if has_layer:
            layer = _layer(store, b"layer %d" % n * (n + 1))
            layers.append(layer)
            image = append_layer(image, layer, entry)
        else:
            image = add_history(image, entry)
    return image, layers


def test_rows(store: Store) -> None:
    image, layers = _image(store)
    stored = store.put_image(image)
    store.db.add_layer(str(layers[1].digest), str(layers[1].diff_id), mt.DOCKER_LAYER_GZIP, layers[1].size,
                       diff_size=4096)  # known uncompressed size wins
    rows = image_history(store, stored)
    expected = [
        # image, created_by, size, empty_layer, layer
        (str(stored.id), "LABEL v=1", 0, True, None),  # top row: the image ID
        (str(layers[2].digest), "COPY app /app", layers[2].size, False, str(layers[2].digest)),
        (str(layers[1].digest), "RUN make", 4096, False, str(layers[1].digest)),
        ("<missing>", "ENV A=1", 0, True, None),
        ("<missing>", 'CMD ["sh"]', 0, True, None),
        (str(layers[0].digest), "ADD rootfs.tar /", layers[0].size, False, str(layers[0].digest)),
    ]
    assert [(r.image, r.created_by, r.size, r.empty_layer, r.layer) for r in rows] == expected
    assert [r.created for r in rows] == [f"2024-01-0{n}T00:00:00Z" for n in range(6, 0, -1)]
    assert [r.comment for r in rows] == [f"c{n}" for n in range(5, -1, -1)]


def test_top_row_with_a_layer(store: Store) -> None:
    layer = _layer(store, b"x")
    stored = store.put_image(append_layer(scratch(Platform("linux", "amd64")), layer, History(created_by="COPY")))
    (row,) = image_history(store, stored)
    assert (row.image, row.layer, row.size) == (str(stored.id), str(layer.digest), layer.size)


def test_more_entries_than_layers(store: Store) -> None:
    layer = _layer(store, b"x")
    image = append_layer(scratch(Platform("linux", "amd64")), layer, History(created_by="one"))
    image = Image(replace(image.config, history=image.config.history + (History(created_by="two"),)), image.layers)
    stored = store.put_image(image)
    rows = image_history(store, stored)
    assert [(r.created_by, r.layer) for r in rows] == [("two", None), ("one", str(layer.digest))]


def test_no_history(store: Store) -> None:
    stored = store.put_image(scratch(Platform("linux", "amd64")))
    assert image_history(store, stored) == []


@pytest.mark.parametrize(("image", "short"), [
    ("sha256:" + "ab" * 32, "abababababab"),
    ("<missing>", "<missing>"),
])
def test_short_image(image: str, short: str) -> None:
    row = HistoryRow(image, None, "", 0, "", True, None)
    assert row.short_image == short


def test_to_json() -> None:
    row = HistoryRow("sha256:" + "0" * 64, "2024-01-01T00:00:00Z", "RUN x", 5, "c", False, "sha256:" + "1" * 64)
    assert row.to_json() == {"id": row.image, "created": row.created, "created_by": "RUN x", "size": 5,
                             "comment": "c", "empty_layer": False, "layer": row.layer}


def test_does_not_read_layers(store: Store) -> None:
    image, layers = _image(store)
    stored = store.put_image(image)
    for layer in layers:
        store.blobs.delete(layer.digest)
    assert len(image_history(store, stored)) == len(STEPS)  # only the database is read
