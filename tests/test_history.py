"""`lamina history`: rows newest first, each history entry paired with its layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lamina.errors import LaminaError
from lamina.history import (
    HistoryRow,
    duration,
    image_history,
    normalize,
    render_template,
    template_fields,
    template_header,
    truncate,
)
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
                             "comment": "c", "empty_layer": False, "layer": row.layer, "instruction": "RUN x",
                             "seconds": None, "cached": None, "build": None}


def test_does_not_read_layers(store: Store) -> None:
    image, layers = _image(store)
    stored = store.put_image(image)
    for layer in layers:
        store.blobs.delete(layer.digest)
    assert len(image_history(store, stored)) == len(STEPS)  # only the database is read


# how each step was made, normalized text, templates -----------------------------------------------
def test_rows_carry_duration_and_cached(store: Store) -> None:
    image, _ = _image(store)
    stored = store.put_image(image)
    store.db.image_steps_put(str(stored.id), "20260101-000000-abcdef", [(3, 12.5, False), (5, 0.25, True)])
    rows = {r.created_by: r for r in image_history(store, stored)}
    assert (rows["RUN make"].seconds, rows["RUN make"].cached) == (12.5, False)
    assert (rows["LABEL v=1"].seconds, rows["LABEL v=1"].cached, rows["LABEL v=1"].build) == (
        0.25, True, "20260101-000000-abcdef")
    assert (rows["ENV A=1"].seconds, rows["ENV A=1"].cached) == (None, None)  # not known: a base image's


@pytest.mark.parametrize(("created_by", "expected"), [
    ('/bin/sh -c #(nop)  CMD ["sh"]', 'CMD ["sh"]'),
    ("/bin/sh -c #(nop) ADD file:abc in / ", "ADD file:abc in /"),
    ("/bin/sh -c apt-get update", "RUN /bin/sh -c apt-get update"),
    ("|2 A=1 B= /bin/sh -c make", "RUN /bin/sh -c make"),
    ("RUN /bin/sh -c make # buildkit", "RUN /bin/sh -c make"),
    ("LABEL map[a:b c:d]", "LABEL a=b c=d"),
    ("/bin/sh -c #(nop)  ONBUILD map[x:y]", "ONBUILD x=y"),
    ("COPY app /app", "COPY app /app"),
    ("", ""),
])
def test_normalize(created_by: str, expected: str) -> None:
    assert normalize(created_by) == expected


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.04, "0.0s"), (2.34, "2.3s"), (12.4, "12s"), (125, "2m05s"), (3725, "1h02m")])
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def _fields(row: HistoryRow, **kw: bool) -> dict[str, str]:
    return template_fields(row, human=kw.get("human", True), no_trunc=kw.get("no_trunc", False),
                           since=lambda t: "ago", size=lambda n: f"{n}B")


def test_templates() -> None:
    row = HistoryRow("sha256:" + "ab" * 32, "2024-01-01T00:00:00Z", "/bin/sh -c #(nop)  CMD [\"sh\"]", 5, "", True,
                     None, 1.5, True)
    fields = _fields(row)
    assert render_template("{{.ID}}|{{ .CreatedBy }}|{{.Duration}}|{{.Cached}}|{{.Size}}", fields) == (
        'abababababab|CMD ["sh"]|1.5s|yes|5B')
    assert render_template("{{json .Cached}}\\t{{.CreatedSince}}", fields) == '"yes"\tago'
    assert template_header("{{.ID}}\\t{{.CreatedBy}}\\t{{.Duration}}") == "IMAGE\tCREATED BY\tDURATION"
    raw = _fields(row, human=False, no_trunc=True)
    assert (raw["ID"], raw["Duration"], raw["Size"], raw["CreatedSince"]) == (row.image, "1.500", "5",
                                                                             "2024-01-01T00:00:00Z")
    with pytest.raises(LaminaError, match="can't evaluate field Nope"):
        render_template("{{.Nope}}", fields)


def test_long_instructions_are_truncated_unless_asked() -> None:
    row = HistoryRow("<missing>", None, "RUN " + "x" * 80, 0, "", False, None)
    assert _fields(row)["CreatedBy"] == truncate(row.created_by) and len(_fields(row)["CreatedBy"]) == 45
    assert _fields(row, no_trunc=True)["CreatedBy"] == row.created_by


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")
def test_built_image_history_says_how_steps_were_made(tmp_path: Path) -> None:
    from helpers.images import busybox_image
    from lamina import api
    from lamina.build.options import BuildOptions

    store = Store(tmp_path / "store")
    busybox_image(store, "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN sleep 0.3 && echo hi > /hi\nENV A=1\n")
    first = api.build(store, BuildOptions(context=ctx, tags=("h:1",)))
    rows = image_history(store, first)
    assert [(r.created_by, r.cached) for r in rows[:2]] == [("ENV A=1", False),
                                                           ("RUN /bin/sh -c sleep 0.3 && echo hi > /hi", False)]
    ran = rows[1].seconds
    assert ran is not None and ran >= 0.3 and rows[2].seconds is None  # the base image's entry
    again = api.build(store, BuildOptions(context=ctx, tags=("h:1",)))
    assert again.id == first.id  # durations stay out of the config: the image is the same
    rows = image_history(store, again)
    assert [r.cached for r in rows[:2]] == [True, True] and rows[1].seconds == pytest.approx(ran, abs=0.01)
    root = str(store.root)
    store.close()
    out = subprocess.run([sys.executable, "-m", "lamina", "--root", root, "history", "--format",
                          "{{.CreatedBy}}|{{.Cached}}", "h:1"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[:2] == ["ENV A=1|yes", "RUN /bin/sh -c sleep 0.3 && echo hi > /hi|yes"]
    table_out = subprocess.run([sys.executable, "-m", "lamina", "--root", root, "history", "h:1"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
    assert table_out[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "DURATION", "CACHED", "COMMENT"]
