"""Metadata in SQLite (WAL): tags, images, layers, cache records, stat cache.

SQLite gives several lamina processes one consistent view of a store with
no daemon: WAL lets readers run beside a writer, and ``busy_timeout`` makes a
second writer wait instead of failing. Blobs live in files; only their
digests are written here, and always after the blob is in place.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    manifest TEXT PRIMARY KEY,      -- manifest digest
    config TEXT NOT NULL,           -- config digest (the image ID)
    media_type TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_config ON images(config);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,          -- normalized reference, e.g. docker.io/library/busybox:latest
    manifest TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_manifest ON tags(manifest);
CREATE TABLE IF NOT EXISTS layers (
    digest TEXT PRIMARY KEY,        -- compressed blob digest
    diff_id TEXT NOT NULL,          -- uncompressed tar digest
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    diff_size INTEGER NOT NULL DEFAULT -1   -- uncompressed size, -1 when unknown
);
CREATE INDEX IF NOT EXISTS layers_diff_id ON layers(diff_id);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    record TEXT NOT NULL,           -- JSON: layer, history entry, inputs
    created REAL NOT NULL,
    used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stat_cache (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    repository TEXT NOT NULL,       -- where a blob is known to exist remotely (for cross-repo mounts)
    digest TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
);
"""


class Metadata:
    """A thin, typed layer over the SQLite file; one connection per instance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 60000")
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            self._conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so read-then-write is atomic."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # images and tags -----------------------------------------------------
    def add_image(self, manifest: str, config: str, media_type: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO images(manifest, config, media_type, created) VALUES (?,?,?,?)",
            (manifest, config, media_type, time.time()))

    def image(self, manifest: str) -> tuple[str, str] | None:
        row = self._conn.execute("SELECT config, media_type FROM images WHERE manifest=?", (manifest,)).fetchone()
        return (row[0], row[1]) if row else None

    def images(self) -> list[tuple[str, str, str, float]]:
        return self._conn.execute("SELECT manifest, config, media_type, created FROM images").fetchall()

    def images_by_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """Images whose config (image ID) or manifest digest starts with ``prefix`` (hex)."""
        like = f"sha256:{prefix}%"
        return self._conn.execute(
            "SELECT manifest, config FROM images WHERE config LIKE ? OR manifest LIKE ?", (like, like)).fetchall()

    def remove_image(self, manifest: str) -> None:
        self._conn.execute("DELETE FROM images WHERE manifest=?", (manifest,))

    def set_tag(self, name: str, manifest: str) -> str | None:
        """Point ``name`` at ``manifest``; returns the manifest it pointed at before."""
        with self.transaction() as conn:
            row = conn.execute("SELECT manifest FROM tags WHERE name=?", (name,)).fetchone()
            conn.execute("INSERT OR REPLACE INTO tags(name, manifest, updated) VALUES (?,?,?)",
                         (name, manifest, time.time()))
        return row[0] if row else None

    def tag(self, name: str) -> str | None:
        row = self._conn.execute("SELECT manifest FROM tags WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def tags(self) -> list[tuple[str, str]]:
        return self._conn.execute("SELECT name, manifest FROM tags ORDER BY name").fetchall()

    def tags_of(self, manifest: str) -> list[str]:
        rows = self._conn.execute("SELECT name FROM tags WHERE manifest=? ORDER BY name", (manifest,))
        return [r[0] for r in rows]

    def remove_tag(self, name: str) -> bool:
        return self._conn.execute("DELETE FROM tags WHERE name=?", (name,)).rowcount > 0

    # layers -----------------------------------------------------------------
    def add_layer(self, digest: str, diff_id: str, media_type: str, size: int, diff_size: int = -1) -> None:
        self._conn.execute("INSERT OR IGNORE INTO layers(digest, diff_id, media_type, size, diff_size) "
                           "VALUES (?,?,?,?,?)", (digest, diff_id, media_type, size, diff_size))
        if diff_size >= 0:
            self._conn.execute("UPDATE layers SET diff_size=? WHERE digest=? AND diff_size<0", (diff_size, digest))

    def diff_size(self, digest: str) -> int | None:
        """The uncompressed size of a layer, when known (docker shows that size)."""
        row = self._conn.execute("SELECT diff_size FROM layers WHERE digest=?", (digest,)).fetchone()
        return int(row[0]) if row and row[0] >= 0 else None

    def layer_by_diff_id(self, diff_id: str) -> tuple[str, str, int] | None:
        row = self._conn.execute("SELECT digest, media_type, size FROM layers WHERE diff_id=? LIMIT 1",
                                 (diff_id,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def layer(self, digest: str) -> tuple[str, str, int] | None:
        row = self._conn.execute("SELECT diff_id, media_type, size FROM layers WHERE digest=?", (digest,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    # build cache --------------------------------------------------------------
    def cache_get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT record FROM cache WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        self._conn.execute("UPDATE cache SET used=? WHERE key=?", (time.time(), key))
        return str(row[0])

    def cache_put(self, key: str, record: str) -> None:
        now = time.time()
        self._conn.execute("INSERT OR REPLACE INTO cache(key, record, created, used) VALUES (?,?,?,?)",
                           (key, record, now, now))

    def cache_records(self) -> list[tuple[str, str, float]]:
        return self._conn.execute("SELECT key, record, used FROM cache").fetchall()

    def cache_delete(self, keys: Iterable[str]) -> None:
        self._conn.executemany("DELETE FROM cache WHERE key=?", ((k,) for k in keys))

    # stat cache -----------------------------------------------------------------
    def stat_get(self, path: str, size: int, mtime_ns: int, ino: int, mode: int) -> str | None:
        row = self._conn.execute(
            "SELECT digest FROM stat_cache WHERE path=? AND size=? AND mtime_ns=? AND ino=? AND mode=?",
            (path, size, mtime_ns, ino, mode)).fetchone()
        return str(row[0]) if row else None

    def stat_put_many(self, rows: Iterable[tuple[str, int, int, int, int, str]]) -> None:
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO stat_cache(path, size, mtime_ns, ino, mode, digest) "
                             "VALUES (?,?,?,?,?,?)", rows)

    # remote sources (for cross-repository blob mounts) ---------------------------
    def add_source(self, repository: str, digest: str) -> None:
        self._conn.execute("INSERT OR IGNORE INTO sources(repository, digest) VALUES (?,?)", (repository, digest))

    def sources(self, digest: str) -> list[str]:
        rows = self._conn.execute("SELECT repository FROM sources WHERE digest=?", (digest,))
        return [r[0] for r in rows]
