"""SQLite metadata: each table round-trips, and two handles on one file see each other."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.errors import StoreError
from lamina.store.db import SCHEMA_VERSION, Metadata

M1, M2 = "sha256:" + "a1" * 32, "sha256:" + "b2" * 32
C1, C2 = "sha256:" + "c3" * 32, "sha256:" + "d4" * 32
L1, D1 = "sha256:" + "e5" * 32, "sha256:" + "f6" * 32
MT = "application/vnd.docker.distribution.manifest.v2+json"
LMT = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Metadata]:
    meta = Metadata(tmp_path / "lamina.db")
    yield meta
    meta.close()


def test_schema_and_wal(db: Metadata) -> None:
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= {"images", "tags", "layers", "cache", "stat_cache", "sources"}


def test_reopen_keeps_data(tmp_path: Path) -> None:
    first = Metadata(tmp_path / "lamina.db")
    first.add_image(M1, C1, MT)
    first.close()
    second = Metadata(tmp_path / "lamina.db")
    assert second.image(M1) == (C1, MT)
    second.close()


def test_images(db: Metadata) -> None:
    assert db.image(M1) is None
    db.add_image(M1, C1, MT)
    db.add_image(M1, C2, "ignored")  # first write wins
    db.add_image(M2, C2, MT)
    assert db.image(M1) == (C1, MT)
    assert sorted((m, c, t) for m, c, t, _ in db.images()) == [(M1, C1, MT), (M2, C2, MT)]
    db.remove_image(M1)
    assert db.image(M1) is None


# prefix, manifests it finds
PREFIXES = [
    ("c3c3", [M1]),  # config (image ID) prefix
    ("a1a1a1", [M1]),  # manifest prefix
    ("d4", [M2]),
    ("0000", []),
]


@pytest.mark.parametrize(("prefix", "expected"), PREFIXES)
def test_images_by_prefix(db: Metadata, prefix: str, expected: list[str]) -> None:
    db.add_image(M1, C1, MT)
    db.add_image(M2, C2, MT)
    assert [m for m, _ in db.images_by_prefix(prefix)] == expected


def test_tags(db: Metadata) -> None:
    assert db.tag("docker.io/library/a:latest") is None
    assert db.set_tag("docker.io/library/a:latest", M1) is None
    assert db.set_tag("docker.io/library/a:latest", M2) == M1  # returns the previous target
    db.set_tag("docker.io/library/b:1", M2)
    db.set_tag("docker.io/library/c:1", M1)
    assert db.tag("docker.io/library/a:latest") == M2
    assert db.tags() == [("docker.io/library/a:latest", M2), ("docker.io/library/b:1", M2),
                         ("docker.io/library/c:1", M1)]
    assert db.tags_of(M2) == ["docker.io/library/a:latest", "docker.io/library/b:1"]
    assert db.remove_tag("docker.io/library/a:latest") is True
    assert db.remove_tag("docker.io/library/a:latest") is False
    assert db.tags_of(M2) == ["docker.io/library/b:1"]


def test_layers(db: Metadata) -> None:
    assert db.layer(L1) is None and db.layer_by_diff_id(D1) is None and db.diff_size(L1) is None
    db.add_layer(L1, D1, LMT, 123)
    assert db.layer(L1) == (D1, LMT, 123)
    assert db.layer_by_diff_id(D1) == (L1, LMT, 123)
    assert db.diff_size(L1) is None  # unknown
    db.add_layer(L1, D1, LMT, 123, diff_size=456)  # learnt later
    assert db.diff_size(L1) == 456
    db.add_layer(L1, D1, LMT, 123, diff_size=789)  # a known size is not overwritten
    assert db.diff_size(L1) == 456
    db.add_layer(L1, D1, LMT, 999)
    assert db.layer(L1) == (D1, LMT, 123)


def test_cache(db: Metadata) -> None:
    record = json.dumps({"layer": L1, "history": {"created_by": "RUN x"}})
    assert db.cache_get("k1") is None
    db.cache_put("k1", record)
    db.cache_put("k2", "{}")
    ((_, _, used_before),) = [r for r in db.cache_records() if r[0] == "k1"]
    assert db.cache_get("k1") == record
    ((_, _, used_after),) = [r for r in db.cache_records() if r[0] == "k1"]
    assert used_after >= used_before
    db.cache_put("k1", "{}")  # replaced
    assert db.cache_get("k1") == "{}"
    db.cache_delete(["k1", "missing"])
    assert [k for k, _, _ in db.cache_records()] == ["k2"]


# (path, size, mtime_ns, ino, mode) asked for, found?
STAT_LOOKUPS = [
    (("a.txt", 10, 1_000, 7, 0o100644), True),
    (("a.txt", 11, 1_000, 7, 0o100644), False),  # size changed
    (("a.txt", 10, 1_001, 7, 0o100644), False),  # touched
    (("a.txt", 10, 1_000, 8, 0o100644), False),  # replaced by another file
    (("a.txt", 10, 1_000, 7, 0o100755), False),  # chmod
    (("b.txt", 10, 1_000, 7, 0o100644), False),
]


@pytest.mark.parametrize(("key", "found"), STAT_LOOKUPS)
def test_stat_cache(db: Metadata, key: tuple[str, int, int, int, int], found: bool) -> None:
    db.stat_put_many([("a.txt", 10, 1_000, 7, 0o100644, D1), ("c.txt", 1, 1, 1, 0o100644, L1)])
    assert db.stat_get(*key) == (D1 if found else None)


def test_stat_cache_replaces(db: Metadata) -> None:
    db.stat_put_many([("a.txt", 10, 1_000, 7, 0o100644, D1)])
    db.stat_put_many([("a.txt", 11, 2_000, 7, 0o100644, L1)])
    assert db.stat_get("a.txt", 10, 1_000, 7, 0o100644) is None
    assert db.stat_get("a.txt", 11, 2_000, 7, 0o100644) == L1


def test_sources(db: Metadata) -> None:
    db.add_source("docker.io/library/a", L1)
    db.add_source("docker.io/library/a", L1)
    db.add_source("ghcr.io/o/b", L1)
    assert sorted(db.sources(L1)) == ["docker.io/library/a", "ghcr.io/o/b"]
    assert db.sources(D1) == []


def test_repo_digests_by_image_id(db: Metadata) -> None:
    db.add_image(M1, C1, MT)
    db.add_image(M2, C1, "application/vnd.oci.image.manifest.v1+json")  # the same image, OCI flavour
    db.add_repo_digest(M1, "docker.io/library/busybox", M1)
    db.add_repo_digest(M1, "docker.io/library/busybox", M1)  # recorded once
    db.add_repo_digest(M2, "127.0.0.1:5000/app", M2)
    assert db.repo_digests(C1) == [("127.0.0.1:5000/app", M2), ("docker.io/library/busybox", M1)]
    assert db.repo_digests(C2) == []


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # what a lamina with SCHEMA_VERSION 1 left behind
        conn.executescript("CREATE TABLE images (manifest TEXT PRIMARY KEY, config TEXT NOT NULL, "
                           "media_type TEXT NOT NULL, created REAL NOT NULL);"
                           f"INSERT INTO images VALUES ('{M1}', '{C1}', '{MT}', 1.0);"
                           "PRAGMA user_version = 1;")
    meta = Metadata(path)
    try:
        assert meta.image(M1) == (C1, MT)
        meta.add_repo_digest(M1, "docker.io/library/app", M1)
        assert meta.repo_digests(C1) == [("docker.io/library/app", M1)]
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
    finally:
        meta.close()


def test_transaction_rolls_back(db: Metadata) -> None:
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO tags(name, manifest, updated) VALUES ('x', ?, 0)", (M1,))
        raise RuntimeError("abort")
    assert db.tag("x") is None


def test_two_instances_on_one_file(tmp_path: Path) -> None:
    a, b = Metadata(tmp_path / "lamina.db"), Metadata(tmp_path / "lamina.db")
    try:
        a.add_image(M1, C1, MT)
        a.set_tag("docker.io/library/app:1", M1)
        b.add_layer(L1, D1, LMT, 5)
        b.cache_put("k", "{}")
        assert b.image(M1) == (C1, MT)
        assert b.tag("docker.io/library/app:1") == M1
        assert a.layer(L1) == (D1, LMT, 5)
        assert a.cache_get("k") == "{}"
        # a write transaction on one handle makes the other wait, not fail
        with a.transaction() as conn:
            conn.execute("INSERT INTO tags(name, manifest, updated) VALUES ('held', ?, 0)", (M2,))
            waiter = threading.Thread(target=b.set_tag, args=("docker.io/library/app:2", M2))
            waiter.start()
            waiter.join(0.2)
            assert waiter.is_alive()
        waiter.join(5)
        assert not waiter.is_alive()
        assert a.tag("docker.io/library/app:2") == M2 and b.tag("held") == M2
    finally:
        a.close()
        b.close()


def test_cache_put_first_keeps_the_first_record(db: Metadata) -> None:
    """Two builds recording the same metadata step at once share the first one's record (its time)."""
    assert db.cache_put_first("k", '{"created": "1"}') == '{"created": "1"}'
    assert db.cache_put_first("k", '{"created": "2"}') == '{"created": "1"}'
    assert db.cache_get("k") == '{"created": "1"}'


def test_a_file_that_is_not_a_database_is_one_error_and_stays_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "lamina.db"
    garbage = bytes(range(256)) * 32
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match="lamina.db: file is not a database"):
        Metadata(path)
    assert path.read_bytes() == garbage
