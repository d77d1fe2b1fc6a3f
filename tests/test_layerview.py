"""`lamina layers` analysis: what each layer adds, changes and deletes, and the bytes it wastes."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.errors import LayerError
from lamina.image.image import Layer, add_history, append_layer, scratch
from lamina.image.layerio import LayerSink
from lamina.layerview import (
    FileChange,
    LayerInput,
    LayersReport,
    WastedFile,
    analyze,
    image_layers,
    top_changes,
)
from lamina.oci import mediatype as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor, Platform
from lamina.store.store import Store

Entry = tuple[str, bytes | None] | tuple[str, bytes | None, int]


def tar(*entries: Entry) -> bytes:
    """A tar of files (bytes) and directories (None; an optional third item is the mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data, *mode in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, mode[0] if mode else 0o755
                out.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                out.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def run(*layers: bytes) -> LayersReport:
    inputs = [LayerInput(f"sha256:{i:064x}", f"sha256:{i + 100:064x}", len(data), f"step {i}",
                         lambda data=data: io.BytesIO(data)) for i, data in enumerate(layers)]  # type: ignore[misc]
    return analyze("sha256:" + "f" * 64, "app:1", inputs)


BASE = tar(("bin", None), ("bin/sh", b"s" * 100), ("etc", None), ("etc/passwd", b"p" * 10),
           ("var", None), ("var/cache", None), ("var/cache/a", b"a" * 30), ("var/cache/b", b"b" * 20))


def test_added_changed_and_deleted_per_layer() -> None:
    second = tar(("etc", None), ("etc/passwd", b"q" * 12), ("etc/group", b"g" * 5), ("bin", None),
                 ("bin/.wh.sh", b""), ("app", None), ("app/main.py", b"m" * 7))
    report = run(BASE, second)
    first, top = report.layers
    assert [c.path for c in first.changes] == ["/bin", "/bin/sh", "/etc", "/etc/passwd", "/var", "/var/cache",
                                               "/var/cache/a", "/var/cache/b"]
    assert all(c.kind == "added" for c in first.changes)
    assert top.changes == (
        FileChange("/app", "added", 0, True),
        FileChange("/app/main.py", "added", 7),
        FileChange("/bin/sh", "deleted", 100),
        FileChange("/etc/group", "added", 5),
        FileChange("/etc/passwd", "changed", 12),
    )  # /etc and /bin are listed again by the tar but unchanged, so not shown
    assert (top.count("added"), top.count("changed"), top.count("deleted")) == (3, 1, 1)


def test_wasted_bytes_and_efficiency() -> None:
    second = tar(("etc", None), ("etc/passwd", b"q" * 12), ("bin", None), ("bin/.wh.sh", b""))
    report = run(BASE, second)
    assert report.wasted_files == (WastedFile("/bin/sh", 100, 0, 1, "deleted"),
                                   WastedFile("/etc/passwd", 10, 0, 1, "overwritten"))
    assert report.layers[0].wasted == 110 and report.layers[1].wasted == 0
    assert report.size == 160 + 12
    assert report.wasted == 110
    assert report.efficiency == pytest.approx(1 - 110 / 172)


def test_deleting_a_directory_wastes_everything_under_it() -> None:
    report = run(BASE, tar(("var", None), ("var/.wh.cache", b"")))
    assert report.layers[1].changes == (FileChange("/var/cache", "deleted", 50, True),)
    assert {w.path for w in report.wasted_files} == {"/var/cache/a", "/var/cache/b"}


def test_opaque_directory_hides_the_lower_contents_but_keeps_its_own() -> None:
    report = run(BASE, tar(("var", None), ("var/cache", None), ("var/cache/.wh..wh..opq", b""),
                           ("var/cache/.wh.a", b""), ("var/cache/new", b"n" * 4)))
    assert report.layers[1].changes == (
        FileChange("/var/cache/a", "deleted", 30),
        FileChange("/var/cache/b", "deleted", 20),
        FileChange("/var/cache/new", "added", 4),
    )  # the redundant whiteout of a under the opaque dir adds nothing
    assert report.wasted == 50


def test_recreated_after_delete_and_type_changes() -> None:
    third = tar(("bin", None), ("bin/sh", b"t" * 3), ("var", None), ("var/cache", b"now a file"))
    report = run(BASE, tar(("bin", None), ("bin/.wh.sh", b"")), third)
    assert report.layers[2].changes == (FileChange("/bin/sh", "added", 3),
                                        FileChange("/var/cache", "changed", 10))
    assert report.wasted == 100 + 50  # sh deleted in layer 1; the cache dir's files replaced by a file
    assert {(w.path, w.how, w.hidden_by) for w in report.wasted_files} == {
        ("/bin/sh", "deleted", 1), ("/var/cache/a", "overwritten", 2), ("/var/cache/b", "overwritten", 2)}


def test_directory_mode_change_is_a_change() -> None:
    report = run(BASE, tar(("etc", None, 0o700)))
    assert report.layers[1].changes == (FileChange("/etc", "changed", 0, True),)
    assert report.wasted == 0


def test_whiteout_of_something_absent_is_a_zero_byte_deletion() -> None:
    report = run(BASE, tar(("etc", None), ("etc/.wh.nothing", b"")))
    assert report.layers[1].changes == (FileChange("/etc/nothing", "deleted", 0),)


def test_names_are_normalized() -> None:
    layer = tar(("./", None), ("./usr/", None), ("./usr/x", b"1"), ("/usr/y", b"22"))
    assert [c.path for c in run(layer).layers[0].changes] == ["/usr", "/usr/x", "/usr/y"]


def test_sizes_count_file_bytes_and_an_empty_blob_is_an_empty_layer() -> None:
    report = run(BASE, b"")
    assert report.layers[0].size == 160  # regular files' bytes, as docker counts a layer's size
    assert report.layers[1].changes == () and report.layers[1].size == 0
    assert report.size == 160


def test_links_keep_their_targets() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for name, kind in (("bin/ls", tarfile.SYMTYPE), ("bin/sh2", tarfile.LNKTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "busybox" if kind == tarfile.SYMTYPE else "bin/sh"
            out.addfile(info)
    changes = run(BASE, buf.getvalue()).layers[1].changes
    assert changes == (FileChange("/bin/ls", "added", 0, False, "busybox"),
                       FileChange("/bin/sh2", "added", 0, False, "bin/sh"))
    empty = run()
    assert empty.layers == () and empty.efficiency == 1.0


def test_a_broken_tar_is_a_layer_error() -> None:
    with pytest.raises(LayerError, match="reading layer sha256:0+"):
        run(b"x" * 1000)


def test_top_changes_keeps_the_largest_in_path_order() -> None:
    changes = tuple(FileChange(f"/f{i}", "added", size) for i, size in enumerate([5, 50, 1, 40, 7]))
    assert [c.path for c in top_changes(changes, 2)] == ["/f1", "/f3"]
    assert top_changes(changes, 0) == changes
    assert top_changes(changes, 10) == changes


def test_json_shape_and_limit() -> None:
    report = run(BASE, tar(("etc", None), ("etc/passwd", b"q" * 12), ("bin", None), ("bin/.wh.sh", b"")))
    doc = report.to_json(limit=2)
    assert doc["efficiency"] == round(1 - 110 / 172, 6)
    assert doc["wasted"] == 110 and doc["size"] == report.size
    top = doc["layers"][0]
    assert (top["added"], top["files_omitted"], len(top["files"])) == (8, 6, 2)
    assert [f["path"] for f in top["files"]] == ["/bin/sh", "/var/cache/a"]
    assert doc["layers"][1]["created_by"] == "step 1"
    assert len(report.to_json()["layers"][0]["files"]) == 8


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def _layer(store: Store, data: bytes, compression: str) -> Layer:
    with store.blobs.writer() as w:
        sink = LayerSink(w, compression)
        sink.write(data)
        sink.close()
        digest = w.commit(sync=False)
    return Layer(Descriptor(mt.DOCKER_LAYER_GZIP, digest, w.size), sink.diff_id)


def test_image_layers_reads_the_store_and_pairs_history(store: Store) -> None:
    image = scratch(Platform("linux", "amd64"))
    base = _layer(store, BASE, "gzip")
    image = append_layer(image, base, History(created_by="ADD rootfs.tar /"))
    image = add_history(image, History(created_by="ENV A=1"))
    second = _layer(store, tar(("etc", None), ("etc/.wh.passwd", b"")), "zstd")
    image = append_layer(image, second, History(created_by="RUN rm /etc/passwd"))
    stored = store.put_image(image)
    report = image_layers(store, stored, "app:1")
    assert (report.image, report.name) == (str(stored.id), "app:1")
    assert [lay.created_by for lay in report.layers] == ["ADD rootfs.tar /", "RUN rm /etc/passwd"]
    assert [lay.digest for lay in report.layers] == [str(base.digest), str(second.digest)]
    assert report.layers[0].blob_size == base.size and report.layers[0].size == 160
    assert report.wasted_files == (WastedFile("/etc/passwd", 10, 0, 1, "deleted"),)
