"""The blob store: nothing becomes visible unless it was complete and matched its digest."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from lamina.errors import DigestMismatch, StoreError
from lamina.oci.digest import Digest
from lamina.store.blobs import BlobStore

HELLO = Digest.of(b"hello")


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path)
    store.init()
    return store


def _blob_files(store: BlobStore) -> list[str]:
    return sorted(os.listdir(store.root / "blobs" / "sha256"))


def _tmp_files(store: BlobStore) -> list[str]:
    return sorted(os.listdir(store.root / "tmp"))


def test_init_writes_an_oci_layout(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.init()
    store.init()  # idempotent
    assert (tmp_path / "oci-layout").read_text() == '{"imageLayoutVersion":"1.0.0"}'
    assert (tmp_path / "index.json").read_text() == '{"schemaVersion":2,"manifests":[]}'
    assert (tmp_path / "blobs" / "sha256").is_dir() and (tmp_path / "tmp").is_dir()


def test_put_read_has_size(blobs: BlobStore) -> None:
    assert not blobs.has(HELLO)
    assert blobs.put(b"hello") == HELLO
    assert blobs.has(HELLO)
    assert blobs.read(HELLO) == b"hello"
    assert blobs.size(HELLO) == 5
    assert blobs.path(HELLO) == blobs.root / "blobs" / "sha256" / HELLO.hex
    assert list(blobs.digests()) == [HELLO]
    assert _tmp_files(blobs) == []


def test_put_is_idempotent(blobs: BlobStore) -> None:
    first = blobs.put(b"hello", HELLO)
    mtime = blobs.path(HELLO).stat().st_mtime_ns
    assert blobs.put(b"hello") == first == blobs.put(b"hello", HELLO)
    assert blobs.path(HELLO).stat().st_mtime_ns == mtime  # not rewritten
    assert _blob_files(blobs) == [HELLO.hex] and _tmp_files(blobs) == []


@pytest.mark.parametrize("present", [False, True], ids=["new", "already-stored"])
def test_put_with_wrong_expected_digest(blobs: BlobStore, present: bool) -> None:
    if present:
        blobs.put(b"hello")
    with pytest.raises(DigestMismatch, match=str(Digest.of(b"other"))):
        blobs.put(b"hello", Digest.of(b"other"))
    assert _blob_files(blobs) == ([HELLO.hex] if present else [])
    assert _tmp_files(blobs) == []


def test_writer_streams_and_commits(blobs: BlobStore) -> None:
    with blobs.writer(HELLO) as w:
        for chunk in (b"he", bytearray(b"ll"), memoryview(b"o")):
            w.write(chunk)
        assert _blob_files(blobs) == []  # invisible until committed
        assert len(_tmp_files(blobs)) == 1
        assert w.commit(sync=False) == HELLO
    assert (w.size, w.digest) == (5, HELLO)
    assert blobs.read(HELLO) == b"hello"
    assert _tmp_files(blobs) == []


def test_writer_left_without_commit_leaves_nothing(blobs: BlobStore) -> None:
    with blobs.writer() as w:
        w.write(b"partial")
    assert _blob_files(blobs) == [] and _tmp_files(blobs) == []


def test_writer_failing_in_block_leaves_nothing(blobs: BlobStore) -> None:
    with pytest.raises(OSError, match="network went away"), blobs.writer() as w:
        w.write(b"partial")
        raise OSError("network went away")
    assert _blob_files(blobs) == [] and _tmp_files(blobs) == []


def test_writer_digest_mismatch_leaves_nothing(blobs: BlobStore) -> None:
    with pytest.raises(DigestMismatch), blobs.writer(Digest.of(b"something else")) as w:
        w.write(b"hello")
        w.commit()
    assert w.digest is None
    assert _blob_files(blobs) == [] and _tmp_files(blobs) == []


def test_writer_explicit_abort(blobs: BlobStore) -> None:
    w = blobs.writer()
    w.write(b"x")
    w.abort()
    w.abort()  # idempotent
    assert _tmp_files(blobs) == []


def test_concurrent_writers_of_one_blob(blobs: BlobStore) -> None:
    data = os.urandom(256 * 1024)
    expected = Digest.of(data)
    barrier = threading.Barrier(8)
    results: list[Digest] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            barrier.wait()
            if i % 2:
                results.append(blobs.put(data, expected))
            else:
                with blobs.writer(expected) as w:
                    for start in range(0, len(data), 4096):
                        w.write(data[start:start + 4096])
                    results.append(w.commit(sync=False))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [expected] * 8
    assert blobs.read(expected) == data
    assert _blob_files(blobs) == [expected.hex] and _tmp_files(blobs) == []


def test_missing_blob_errors(blobs: BlobStore) -> None:
    for op in (blobs.open, blobs.read, blobs.size):
        with pytest.raises(StoreError, match=f"blob {HELLO} is not in the store"):
            op(HELLO)


def test_only_sha256_paths(blobs: BlobStore) -> None:
    with pytest.raises(StoreError, match="unsupported digest algorithm"):
        blobs.path(Digest("sha512", "0" * 128))


def test_delete(blobs: BlobStore) -> None:
    blobs.put(b"hello")
    blobs.delete(HELLO)
    blobs.delete(HELLO)  # a missing blob is fine
    assert not blobs.has(HELLO)


def test_clean_tmp_removes_only_old_files(blobs: BlobStore) -> None:
    old, fresh = blobs.tmp_path("blob"), blobs.tmp_path("blob")
    old.write_bytes(b"left by a dead process")
    fresh.write_bytes(b"being written right now")
    an_hour_and_more = time.time() - 3700
    os.utime(old, (an_hour_and_more, an_hour_and_more))
    (blobs.root / "tmp" / "old-dir").mkdir()
    os.utime(blobs.root / "tmp" / "old-dir", (an_hour_and_more, an_hour_and_more))
    assert blobs.clean_tmp() == 1
    assert sorted(_tmp_files(blobs)) == sorted([fresh.name, "old-dir"])
    assert blobs.clean_tmp(older_than=3800) == 0
    assert blobs.clean_tmp(older_than=-1) == 1  # directories are never removed
    assert _tmp_files(blobs) == ["old-dir"]


def test_tmp_paths_are_unique(blobs: BlobStore) -> None:
    paths = {blobs.tmp_path("blob") for _ in range(100)}
    assert len(paths) == 100
    assert all(p.parent == blobs.root / "tmp" and p.name.startswith(f"blob-{os.getpid()}-") for p in paths)


def test_commit_without_sync_leaves_the_fsync_to_sync_blobs(blobs: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.store import blobs as module

    synced: list[str] = []
    monkeypatch.setattr(module.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    with blobs.writer() as w:
        w.write(b"layer bytes")
        digest = w.commit(sync=False)  # the kernel is only asked to start writing it back
    assert synced == [] and blobs.read(digest) == b"layer bytes"
    module.sync_blobs([blobs.path(digest)])
    assert synced == [str(blobs.path(digest)), str(blobs.path(digest).parent)]  # the file, then its directory
    with blobs.writer() as w:
        w.write(b"other bytes")
        w.commit()
    assert len(synced) == 3  # a plain commit still fsyncs at once


def test_start_writeback_is_best_effort() -> None:
    from lamina.store.blobs import start_writeback

    start_writeback(-1)  # the fsync that follows is what makes a blob durable: a failure here is no error
