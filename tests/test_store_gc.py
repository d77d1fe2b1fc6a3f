"""Garbage collection: what prune removes, what it must keep (tags, leases), and disk usage.

The unit tests build tiny images by hand; the integration tests at the end
build with runc and prune between builds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.images import marker_layer
from lamina.errors import StoreError
from lamina.image.image import Layer, append_layer, scratch
from lamina.oci import mediatype as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.reference import Reference
from lamina.store import gc
from lamina.store.store import Store, StoredImage

NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def _layer(store: Store, marker: str) -> Layer:
    return marker_layer(store, marker, snapshot=True)


def _put(store: Store, *markers: str, tags: tuple[str, ...] = ()) -> StoredImage:
    image = scratch(Platform("linux", "amd64"))
    for marker in markers:
        image = append_layer(image, _layer(store, marker), History(created_by=f"COPY {marker}"))
    stored = store.put_image(image)
    for tag in tags:
        store.tag(Reference.parse(tag), stored.manifest_digest)
    return stored


def _record(store: Store, key: str, layer: Layer | None = None) -> None:
    doc: dict[str, object] = {"created": "2024-01-01T00:00:00Z"}
    if layer is not None:
        doc["layer"] = {"digest": str(layer.digest), "diff_id": str(layer.diff_id), "size": layer.size,
                        "media_type": layer.desc.media_type}
    store.db.cache_put(key, json.dumps(doc))


def _blobs(store: Store) -> set[str]:
    return {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").iterdir()}


def _all_blobs_of(stored: StoredImage) -> set[str]:
    return {str(stored.manifest_digest), str(stored.config_digest), *(str(la.digest) for la in stored.image.layers)}


# --- filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", NOW - 86400), ("1h30m", NOW - 5400), ("90s", NOW - 90), ("1.5h", NOW - 5400), ("10m", NOW - 600),
    ("1700000000", 1_700_000_000.0), ("1699999999.5", 1_699_999_999.5),
    ("2023-11-14T22:13:20Z", 1_700_000_000.0), ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
    ("2023-11-14", 1_699_920_000.0),
])
def test_parse_until(text: str, expected: float) -> None:
    assert gc.parse_until(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "24", "h", "1d", "yesterday", "24h junk"])
def test_parse_until_rejects(text: str) -> None:
    if text in ("24",):  # a bare number is a Unix timestamp, as in docker
        assert gc.parse_until(text, NOW) == 24.0
        return
    with pytest.raises(StoreError, match="invalid filter"):
        gc.parse_until(text, NOW)


def test_parse_filters() -> None:
    assert gc.parse_filters([], NOW) is None
    assert gc.parse_filters(["until=1h"], NOW) == NOW - 3600
    with pytest.raises(StoreError, match="invalid filter 'label=x'"):
        gc.parse_filters(["label=x"], NOW)
    with pytest.raises(StoreError, match="invalid filter"):
        gc.parse_filters(["until"], NOW)


# --- prune and sweep ----------------------------------------------------------------------------


def test_prune_removes_untagged_images_and_their_garbage(store: Store) -> None:
    kept = _put(store, "base", "app", tags=("app:1",))
    old = _put(store, "base", "old")
    result = gc.prune(store)
    assert result.images == (str(old.config_digest),)
    assert store.db.image(str(old.manifest_digest)) is None
    assert _blobs(store) == _all_blobs_of(kept)
    old_layer = old.image.layers[1]
    assert not store.snapshot_path(old_layer.diff_id).exists()
    assert store.db.layer(str(old_layer.digest)) is None
    for layer in kept.image.layers:  # shared "base" layer and its snapshot stay
        assert store.snapshot_path(layer.diff_id).is_dir()
        assert store.db.layer(str(layer.digest)) is not None
    assert result.reclaimed > 0 and result.sweep.ran
    assert store.resolve("app:1").image == kept.image
    again = gc.prune(store)
    assert again.images == () and again.reclaimed == 0


def test_prune_keeps_what_cache_records_name(store: Store) -> None:
    old = _put(store, "cached")
    _record(store, "sha256:" + "1" * 64, old.image.layers[0])
    gc.prune(store)
    layer = old.image.layers[0]
    assert store.blobs.has(layer.digest) and store.snapshot_path(layer.diff_id).is_dir()
    assert not store.blobs.has(old.manifest_digest)


def test_builder_prune_dangling_and_all(store: Store) -> None:
    tagged = _put(store, "in-image", tags=("app:1",))
    lone = _layer(store, "intermediate")  # a builder stage's layer: no image has it
    _record(store, "sha256:" + "a" * 64, tagged.image.layers[0])
    _record(store, "sha256:" + "b" * 64, lone)
    _record(store, "sha256:" + "c" * 64)  # a metadata-only step
    result = gc.prune(store, images=False, cache="dangling")
    assert result.records == ("sha256:" + "b" * 64,)
    assert not store.blobs.has(lone.digest) and not store.snapshot_path(lone.diff_id).exists()
    result = gc.prune(store, images=False, cache="all")
    assert sorted(result.records) == ["sha256:" + "a" * 64, "sha256:" + "c" * 64]
    assert store.db.cache_entries() == []
    assert _blobs(store) == _all_blobs_of(tagged)  # the tagged image is whole


def test_all_build_cache_includes_run_cache_mounts(store: Store) -> None:
    mounts = store.root / gc.CACHE_MOUNTS
    (mounts / "f00d").mkdir(parents=True)
    (mounts / "f00d" / "pip.whl").write_bytes(b"w" * 500)
    (mounts / "f00d.lock").write_text("")
    assert gc.prune(store, cache="dangling").sweep.cache_mounts == ()
    result = gc.prune(store, cache="all")
    assert sorted(result.sweep.cache_mounts) == ["f00d", "f00d.lock"] and result.reclaimed >= 500
    assert os.listdir(mounts) == [] and os.listdir(store.root / "tmp") == []


def test_prune_forgets_lineage_and_step_timings_of_what_is_gone(store: Store) -> None:
    kept = _put(store, "kept", tags=("app:1",))
    gone = _put(store, "gone")
    for stored in (kept, gone):
        store.db.image_steps_put(str(stored.config_digest), "b1", [(0, 1.0, False)])
    live, dead = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    _record(store, live)
    store.db.lineage_put_many([("ctx/Dockerfile", "0/2", "p", live), ("ctx/Dockerfile", "0/3", "p2", dead)])
    gc.prune(store, until=time.time() - 3600)  # rows used since `until` (or a lease began) stay
    assert store.db.lineage_find("ctx/Dockerfile", "p2", "0/3") == dead
    gc.prune(store)
    assert store.db.image_steps(str(kept.config_digest)) and not store.db.image_steps(str(gone.config_digest))
    assert store.db.lineage_find("ctx/Dockerfile", "p2", "0/3") is None  # its record is gone
    assert store.db.lineage_find("ctx/Dockerfile", "p", "0/2") == live


def _kept_build(store: Store, build_id: str, *, lowers: list[Path] | None = None, age: float = 0.0) -> None:
    logs = store.root / gc.LOGS / build_id
    logs.mkdir(parents=True)
    (logs / "build.json").write_text('{"status": "failed"}')
    (logs / "2.log").write_bytes(b"x" * 100)
    if lowers is not None:
        debug = store.root / gc.DEBUG / build_id
        (debug / "upper").mkdir(parents=True)
        (debug / "upper" / "big").write_bytes(b"u" * 1000)
        (debug / "debug.json").write_text(json.dumps({"lowers": [str(p) for p in lowers]}))
    if age:
        stamp = time.time() - age
        for path in (logs / "build.json", logs):
            os.utime(path, (stamp, stamp))


def test_logs_and_debug_states_are_counted_and_pruned(store: Store) -> None:
    layer = _layer(store, "lower")
    lower = store.snapshot_path(layer.diff_id)
    _put(store, "lower", tags=("app:1",))
    _kept_build(store, "20260101-000000-aaaaaa", lowers=[lower], age=7200)
    _kept_build(store, "20260102-000000-bbbbbb", lowers=[store.root / "snapshots" / ("0" * 64)])  # its lower is gone
    _kept_build(store, "20260103-000000-cccccc", lowers=[lower])
    _kept_build(store, "20260104-000000-dddddd")
    shutil.rmtree(store.root / gc.LOGS / "20260103-000000-cccccc")  # logs pruned: no way to name it any more
    rows = {r.kind: r for r in gc.usage(store).rows}
    assert (rows["Build Logs"].total, rows["Debug States"].total) == (3, 3)
    assert rows["Debug States"].size >= 3000 and rows["Build Logs"].size >= 300
    result = gc.prune(store)  # no -a, no filter: logs stay, undebuggable states go
    assert result.logs == () and result.sweep.debug == ("20260102-000000-bbbbbb", "20260103-000000-cccccc")
    assert sorted(os.listdir(store.root / gc.DEBUG)) == ["20260101-000000-aaaaaa"]
    result = gc.prune(store, images=False, cache="dangling", until=time.time() - 3600)
    assert result.logs == ("20260101-000000-aaaaaa",) and result.sweep.debug == ("20260101-000000-aaaaaa",)
    result = gc.prune(store, images=False, cache="all")
    assert result.logs == ("20260102-000000-bbbbbb", "20260104-000000-dddddd") and result.logs_size >= 200
    assert os.listdir(store.root / gc.LOGS) == [] and os.listdir(store.root / gc.DEBUG) == []


def test_until_keeps_recent_rows(store: Store) -> None:
    _put(store, "recent")
    _record(store, "sha256:" + "d" * 64, _layer(store, "recent-cache"))
    result = gc.prune(store, cache="all", until=time.time() - 3600)
    assert result.images == () and result.records == ()
    result = gc.prune(store, cache="all", until=time.time() + 1)
    assert len(result.images) == 1 and len(result.records) == 1


def test_storing_an_image_again_counts_as_new(store: Store) -> None:
    stored = _put(store, "again")
    before = store.db.images()[0][3]
    time.sleep(0.01)
    store.put_manifest_bytes(store.blobs.read(stored.manifest_digest))
    assert store.db.images()[0][3] > before
    assert store.db.image(str(stored.manifest_digest)) == (str(stored.config_digest), stored.manifest.media_type)


def test_a_live_lease_stops_the_sweep_and_keeps_rows_used_since(store: Store, tmp_path: Path) -> None:
    old = _put(store, "old")  # stored before the lease: pruned (row), but its blobs stay for now
    holder = _hold_lease(store.root)
    try:
        new = _put(store, "new")  # stored during the lease: kept entirely
        _record(store, "sha256:" + "e" * 64, _layer(store, "in-use"))
        result = gc.prune(store, cache="all")
        assert not result.sweep.ran
        assert [lease.operation for lease in result.sweep.busy] == ["build"]
        assert result.images == (str(old.config_digest),)
        assert result.records == ()  # used after the lease began
        assert store.db.image(str(new.manifest_digest)) is not None
        assert _all_blobs_of(old) | _all_blobs_of(new) <= _blobs(store)
    finally:
        holder.terminate()
        holder.wait()
    result = gc.prune(store)
    assert result.sweep.ran and not (_all_blobs_of(old) & _blobs(store))


def _hold_lease(root: Path) -> subprocess.Popen[str]:
    code = ("import sys, time\nfrom lamina.store.lease import Lease\n"
            f"with Lease({str(root)!r}, 'build'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    time.sleep(0.05)
    return proc


def test_sweep_removes_stray_blobs_snapshots_and_leftovers(store: Store) -> None:
    stray = store.blobs.put(b"nobody's")
    orphan = store.snapshots_dir / ("f" * 64)
    (orphan / "sub").mkdir(parents=True)
    (orphan / "sub" / "file").write_bytes(b"x" * 1000)
    half = store.snapshots_dir / ".tmp-gc-ffffffffffff-dead"  # a sweep killed mid-delete
    half.mkdir()
    (store.root / "tmp" / "blob-999999-feed").write_bytes(b"partial")
    result = gc.sweep(store)
    assert result.blobs == (str(stray),) and result.snapshots == ("sha256:" + "f" * 64,)
    assert result.leftovers == 2 and result.reclaimed >= 1000 + len(b"nobody's") + len(b"partial")
    assert os.listdir(store.snapshots_dir) == [] and os.listdir(store.root / "tmp") == []


def test_sweep_keeps_an_index_and_its_manifests(store: Store) -> None:
    from lamina.oci.manifest import Index

    child = _put(store, "child")
    store.db.remove_image(str(child.manifest_digest))
    index = Index((Descriptor(mt.DOCKER_MANIFEST, child.manifest_digest, 1, platform=Platform("linux", "amd64")),))
    digest = store.blobs.put(index.encode())
    store.db.add_image(str(digest), str(digest), mt.OCI_INDEX)
    store.tag(Reference.parse("multi:1"), digest)
    gc.prune(store)
    assert _all_blobs_of(child) | {str(digest)} <= _blobs(store)


def test_usage(store: Store) -> None:
    tagged = _put(store, "base", "top", tags=("app:1",))
    dangling = _put(store, "base", "gone")
    lone = _layer(store, "lone")
    _record(store, "sha256:" + "9" * 64, lone)
    stray = store.blobs.put(b"stray")
    found = gc.usage(store)
    rows = {r.kind: r for r in found.rows}
    size = found.blob_sizes
    assert (rows["Images"].total, rows["Images"].active) == (2, 1)
    assert rows["Images"].size == sum(size[d] for d in _all_blobs_of(tagged) | _all_blobs_of(dangling))
    assert rows["Images"].reclaimable == sum(size[d] for d in _all_blobs_of(dangling) - _all_blobs_of(tagged))
    assert (rows["Build Cache"].total, rows["Build Cache"].active) == (1, 0)
    assert rows["Build Cache"].size == rows["Build Cache"].reclaimable == size[str(lone.digest)]
    assert (rows["Snapshots"].total, rows["Snapshots"].active) == (4, 4)
    assert (rows["Unreferenced"].total, rows["Unreferenced"].size) == (1, size[str(stray)])


# --- with real builds (runc, overlayfs) ---------------------------------------------------------

needs_runc = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")


def _build(store: Store, context: Path, tag: str) -> tuple[StoredImage, int, int]:
    """Build; the image, and how many steps came from the cache out of how many."""
    from lamina import api
    from lamina.build import events as ev
    from lamina.build.options import BuildOptions

    seen: list[ev.BuildDone] = []
    stored = api.build(store, BuildOptions(context=context, tags=(tag,)),
                       listener=lambda e: seen.append(e) if isinstance(e, ev.BuildDone) else None)
    return stored, seen[-1].cached_steps, seen[-1].total_steps


@pytest.mark.integration
@needs_runc
def test_prune_after_real_builds_keeps_tagged_images_runnable_and_cached(store: Store, tmp_path: Path) -> None:
    from helpers.images import busybox_image
    from lamina import api
    from lamina.store.check import check

    busybox_image(store)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test AS tools\nRUN echo tool > /tool\n"
                                    "FROM busybox:test\nCOPY --from=tools /tool /tool\nRUN echo v1 > /v\n")
    first, _, _ = _build(store, ctx, "app:1")
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text().replace("v1", "v2"))
    second, _, _ = _build(store, ctx, "app:1")
    result = gc.prune(store)
    assert result.images == (str(first.config_digest),) and result.sweep.ran and result.reclaimed > 0
    assert check(store).problems == ()
    out: list[bytes] = []
    assert api.run(store, "app:1", ["cat", "/tool", "/v"], output=out.append) == 0
    assert b"".join(out) == b"tool\nv2\n"
    again, cached, total = _build(store, ctx, "app:1")
    assert again.manifest_digest == second.manifest_digest and cached == 3  # every RUN and COPY from the cache
    # builder prune --all: the cache is gone, the next build runs its steps again
    assert gc.prune(store, images=False, cache="all").records
    _, cached, _ = _build(store, ctx, "app:1")
    assert cached == 0
    assert check(store).problems == ()


@pytest.mark.integration
@needs_runc
def test_prune_during_a_build_keeps_what_the_build_uses(store: Store, tmp_path: Path) -> None:
    from helpers.images import busybox_image
    from lamina import api
    from lamina.store.check import check

    busybox_image(store)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo a > /a\nRUN sleep 3 && echo b > /b\n")
    build = subprocess.Popen([sys.executable, "-m", "lamina", "--root", str(store.root), "build", "-t", "app:1",
                              str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    try:
        deadline = time.monotonic() + 60
        while not store.db.cache_entries():  # the first RUN is done, the second is sleeping
            assert time.monotonic() < deadline and build.poll() is None, build.communicate()[0]
            time.sleep(0.05)
        store.untag(Reference.parse("busybox:test"))  # its base is now dangling, and old
        pruned = gc.prune(store, cache="all")
        assert not pruned.sweep.ran and [b.operation for b in pruned.sweep.busy] == ["build"]
        assert len(pruned.images) == 1 and pruned.records == ()  # the build's record is newer than its lease
    finally:
        output = build.communicate(timeout=120)[0]
    assert build.returncode == 0, output
    assert check(store).problems == ()
    assert gc.prune(store).sweep.ran  # nothing runs now: the garbage goes, the image stays whole
    assert check(store).problems == ()
    out: list[bytes] = []
    assert api.run(store, "app:1", ["cat", "/a", "/b"], output=out.append) == 0
    assert b"".join(out) == b"a\nb\n"
