"""``system check``: each kind of damage is reported in one line, repaired, and a re-check is clean."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.images import marker_layer
from lamina.image.image import Layer, append_layer, scratch
from lamina.oci.config import History
from lamina.oci.descriptor import Platform
from lamina.oci.reference import Reference
from lamina.store.check import Problem, check, repair
from lamina.store.store import Store, StoredImage


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def _layer(store: Store, marker: str) -> Layer:
    return marker_layer(store, marker)


def _put(store: Store, marker: str, tag: str) -> StoredImage:
    layer = _layer(store, marker)
    store.db.cache_put("sha256:" + marker.encode().hex().ljust(64, "0")[:64], json.dumps(
        {"created": "2024-01-01T00:00:00Z", "layer": {"digest": str(layer.digest), "diff_id": str(layer.diff_id),
                                                      "size": layer.size, "media_type": layer.desc.media_type}}))
    (store.snapshot_path(layer.diff_id)).mkdir()
    stored = store.put_image(append_layer(scratch(Platform("linux", "amd64")), layer, History(created_by=marker)))
    store.tag(Reference.parse(tag), stored.manifest_digest)
    return stored


def _blob(store: Store, digest: object) -> Path:
    return store.root / "blobs" / "sha256" / str(digest).removeprefix("sha256:")


def _lines(problems: tuple[Problem, ...]) -> list[str]:
    return [str(p) for p in problems]


def _repaired_clean(store: Store) -> list[str]:
    done = repair(store, check(store).problems)
    assert check(store).problems == ()
    return done


def test_a_sound_store_has_no_problems(store: Store) -> None:
    _put(store, "one", "a:1")
    _put(store, "two", "b:1")
    report = check(store)
    assert report.problems == ()
    assert (report.images, report.tags, report.records, report.snapshots) == (2, 2, 2, 2)
    assert report.blobs == 6 and report.blob_bytes == sum(p.stat().st_size for p in _blob(store, "").iterdir())


def test_corrupt_layer_blob(store: Store) -> None:
    broken = _put(store, "one", "a:1")
    sound = _put(store, "two", "b:1")
    layer = broken.image.layers[0].digest
    _blob(store, layer).write_bytes(b"not the layer")
    lines = _lines(check(store).problems)
    assert lines[0].startswith(f"blob {layer}: content hashes to sha256:")
    assert f"image {broken.manifest_digest}: layer {layer} is corrupt (a:1)" in lines
    assert f"tag a:1: its image {broken.manifest_digest} is broken" in lines
    assert any(line.startswith("cache record ") and str(layer) in line for line in lines)
    assert f"layer record {layer}: its blob is corrupt" in lines
    assert len(lines) == 5
    done = _repaired_clean(store)
    assert done[0] == f"removed blob {layer}" and len(done) == 5
    assert store.lookup("a:1") is None
    assert store.resolve("b:1").image == sound.image  # untouched


def test_missing_config_and_manifest(store: Store) -> None:
    one = _put(store, "one", "a:1")
    two = _put(store, "two", "b:1")
    _blob(store, one.config_digest).unlink()
    _blob(store, two.manifest_digest).unlink()
    lines = _lines(check(store).problems)
    assert f"image {one.manifest_digest}: config blob {one.config_digest} is missing (a:1)" in lines
    assert f"image {two.manifest_digest}: manifest blob is missing (b:1)" in lines
    _repaired_clean(store)
    assert store.db.tags() == [] and store.db.images() == []


def test_dangling_tag_and_record(store: Store) -> None:
    _put(store, "one", "a:1")
    store.db.set_tag("docker.io/library/ghost:1", "sha256:" + "0" * 64)
    store.db.cache_put("sha256:" + "1" * 64, json.dumps({"layer": {"digest": "sha256:" + "2" * 64}}))
    store.db.cache_put("sha256:" + "3" * 64, "{not json")
    lines = _lines(check(store).problems)
    assert lines == [
        f"tag ghost:1: points to sha256:{'0' * 64}, which is not in the store",
        f"cache record sha256:{'1' * 64}: layer sha256:{'2' * 64} is missing or corrupt",
        f"cache record sha256:{'3' * 64}: not valid JSON",
    ]
    assert _repaired_clean(store) == ["removed tag ghost:1", f"removed cache record sha256:{'1' * 64}",
                                      f"removed cache record sha256:{'3' * 64}"]
    assert store.lookup("a:1") is not None


def test_leftovers_snapshots_and_layout(store: Store) -> None:
    _put(store, "one", "a:1")
    (store.snapshots_dir / ".tmp-0123456789ab-q1").mkdir()
    (store.snapshots_dir / "junk").write_text("x")
    (store.root / "tmp" / "blob-999999-ee").write_text("x")
    (store.root / "index.json").unlink()
    lines = _lines(check(store).problems)
    assert "layout file index.json: is missing" in lines
    assert "snapshot snapshots/junk: not a snapshot (name or file type)" in lines
    assert "leftover snapshots/.tmp-0123456789ab-q1: an interrupted unpack" in lines
    assert "leftover tmp/blob-999999-ee: left by a dead process" in lines
    assert check(store, with_leftovers=False).problems == tuple(p for p in check(store).problems
                                                                  if p.kind != "leftover")
    _repaired_clean(store)
    assert json.loads((store.root / "index.json").read_text())["manifests"] == []


def test_debug_states_that_can_no_longer_be_debugged(store: Store) -> None:
    for build_id, lower in (("20260101-000000-aaaaaa", store.snapshots_dir), ("20260102-000000-bbbbbb",
                                                                             store.root / "gone")):
        (store.root / "logs" / build_id).mkdir(parents=True)
        (store.root / "debug" / build_id / "upper").mkdir(parents=True)
        (store.root / "debug" / build_id / "debug.json").write_text(json.dumps({"lowers": [str(lower)]}))
    lines = _lines(check(store).problems)
    assert lines == ["leftover debug/20260102-000000-bbbbbb: a failed RUN kept for lamina debug whose layers "
                     "or logs are gone"]
    _repaired_clean(store)
    assert os.listdir(store.root / "debug") == ["20260101-000000-aaaaaa"]


def test_stray_file_among_blobs(store: Store) -> None:
    (_blob(store, "") / "not-a-digest").write_text("x")
    assert _lines(check(store).problems) == ["blob not-a-digest: not a blob (name or file type)"]
    _repaired_clean(store)


def test_hashing_streams_large_blobs(store: Store) -> None:
    with store.blobs.writer() as w:
        for _ in range(20):
            w.write(b"z" * (1 << 20))
        digest = w.commit(sync=False)
    assert check(store, workers=2).problems == ()
    with open(_blob(store, digest), "r+b") as f:
        f.seek(15 << 20)
        f.write(b"y")
    assert [p.subject for p in check(store, workers=2).problems] == [str(digest)]


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")
def test_after_a_build_killed_mid_run_the_next_build_works_and_check_is_clean(store: Store, tmp_path: Path) -> None:
    from helpers.images import busybox_image
    from lamina import api
    from lamina.build.options import BuildOptions

    busybox_image(store)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo started && sleep 8\n")
    proc = subprocess.Popen([sys.executable, "-m", "lamina", "--root", str(store.root), "build", "-t", "app:1",
                             str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert proc.stdout is not None
    for line in proc.stdout:
        if "started" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    kinds = {p.kind for p in check(store).problems}
    assert kinds == {"leftover"}  # its lease file, temp dirs: nothing damaged
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo done > /done\n")
    api.build(store, BuildOptions(context=ctx, tags=("app:1",)))
    assert check(store).problems == ()
