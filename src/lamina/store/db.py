"""Metadata in SQLite (WAL): tags, images, layers, cache records, stat cache.

SQLite gives several lamina processes one consistent view of a store with
no daemon: WAL lets readers run beside a writer, and ``busy_timeout`` makes a
second writer wait instead of failing. Blobs live in files; only their
digests are written here, and always after the blob is in place.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lamina.errors import StoreError

# 2: cache_lineage and image_steps (explaining misses, history timings)
# 3: repo_digests (inspect's RepoDigests after push and pull)
# 4: build_memo (a rebuild of unchanged inputs answered without parsing or walking the cache);
#    stat_cache keyed by ctime instead of mtime (dropped on upgrade: it is only a cache)
SCHEMA_VERSION = 4
DB_FILE = "lamina.db"  # in the store's root

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
    ctime_ns INTEGER NOT NULL,      -- no edit keeps it (mtime can be set back); mtime_ns before v4
    ino INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    repository TEXT NOT NULL,       -- where a blob is known to exist remotely (for cross-repo mounts)
    digest TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
);
-- explaining cache misses: per Dockerfile, what was last built on a parent and at a step position
CREATE TABLE IF NOT EXISTS cache_lineage (
    file TEXT NOT NULL,             -- the Dockerfile's identity (context path + file name)
    position TEXT NOT NULL,         -- stage index and step number, e.g. "0/7"
    parent TEXT NOT NULL,           -- the parent's cache key
    key TEXT NOT NULL,              -- the step's cache key
    used REAL NOT NULL,
    PRIMARY KEY (file, position, parent)
);
CREATE INDEX IF NOT EXISTS cache_lineage_parent ON cache_lineage(file, parent, used);
CREATE INDEX IF NOT EXISTS cache_lineage_position ON cache_lineage(file, position, used);
-- per image (config digest): how each history entry was made by the last build of it
CREATE TABLE IF NOT EXISTS image_steps (
    config TEXT NOT NULL,           -- config digest (the image ID)
    position INTEGER NOT NULL,      -- index into the config's history
    seconds REAL NOT NULL,          -- how long the step took when it really ran
    cached INTEGER NOT NULL,        -- 1 when the last build took it from the cache
    build TEXT NOT NULL,            -- the build ID (see lamina logs)
    PRIMARY KEY (config, position)
);
-- whole builds by their inputs (build/memo.py): what an unchanged rebuild would print and produce
CREATE TABLE IF NOT EXISTS build_memo (
    key TEXT PRIMARY KEY,           -- the build's options as canonical JSON (memo.memo_key)
    record TEXT NOT NULL,           -- JSON: watched files, bases, cache keys, image, events
    used REAL NOT NULL
);
-- where an image is known remotely by digest: docker's RepoDigests (name@sha256:...)
CREATE TABLE IF NOT EXISTS repo_digests (
    manifest TEXT NOT NULL,         -- the local image's manifest digest
    repository TEXT NOT NULL,       -- normalized, e.g. docker.io/library/busybox
    digest TEXT NOT NULL,           -- what the registry names it by (an index's digest after a pull of one)
    PRIMARY KEY (manifest, repository, digest)
);
"""


class Metadata:
    """A thin, typed layer over the SQLite file; one connection per thread.

    A connection per thread (parallel build stages, transfer workers) keeps one
    thread's transaction from swallowing another's statements; between them,
    WAL and ``busy_timeout`` work as they do between processes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        try:
            mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                self._conn.execute("PRAGMA journal_mode = WAL")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:  # not a database at all: one line, and the file left as it is
            self.close()
            raise StoreError(f"{path}: {exc} (restore it from a backup, or start a new store)") from None
        if version < SCHEMA_VERSION:
            upgrade = "DROP TABLE IF EXISTS stat_cache;" if 0 < version < 4 else ""
            self._conn.executescript(
                f"BEGIN IMMEDIATE;{upgrade}{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")

    @property
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

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
        # storing it again counts as new (``created`` is when it last entered the store): prune's
        # age rules then never remove an image a running operation has just stored
        self._conn.execute(
            "INSERT INTO images(manifest, config, media_type, created) VALUES (?,?,?,?) "
            "ON CONFLICT(manifest) DO UPDATE SET created=excluded.created",
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
    def cache_get(self, key: str, *, touch: bool = True) -> str | None:
        """The record under ``key``; ``touch`` marks it used now (a build batches that: cache_touch)."""
        row = self._conn.execute("SELECT record FROM cache WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        if touch:
            self._conn.execute("UPDATE cache SET used=? WHERE key=?", (time.time(), key))
        return str(row[0])

    def cache_touch(self, keys: Iterable[str]) -> None:
        """Mark records used now in one transaction (one commit instead of one per hit)."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany("UPDATE cache SET used=? WHERE key=?", ((now, k) for k in keys))

    def cache_all_present(self, keys: Iterable[str]) -> bool:
        """Whether every one of ``keys`` has a record (a memo stands only while its steps' records do)."""
        wanted = set(keys)
        found = 0
        listed = list(wanted)
        for start in range(0, len(listed), 500):  # SQLite's bound-parameter limit
            chunk = listed[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found += self._conn.execute(f"SELECT count(*) FROM cache WHERE key IN ({marks})", chunk).fetchone()[0]
        return found == len(wanted)

    # whole-build memos (build/memo.py) ---------------------------------------------
    def memo_get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT record FROM build_memo WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def memo_put(self, key: str, record: str, *, keep_seconds: float = 30 * 86400) -> None:
        """Store a memo; memos unused for ``keep_seconds`` go at the same time (they are only a shortcut)."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO build_memo(key, record, used) VALUES (?,?,?)", (key, record, now))
            conn.execute("DELETE FROM build_memo WHERE used < ?", (now - keep_seconds,))

    def memo_used(self, key: str, cache_keys: Iterable[str], *, image: str, build_id: str) -> None:
        """A memo answered a build: it and the cache records behind it count as used now, and
        the image's steps as taken from the cache by that build (as a fully cached build records)."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute("UPDATE build_memo SET used=? WHERE key=?", (now, key))
            conn.executemany("UPDATE cache SET used=? WHERE key=?", ((now, k) for k in cache_keys))
            if conn.execute("SELECT 1 FROM image_steps WHERE config=? AND cached=0 LIMIT 1", (image,)).fetchone():
                conn.execute("UPDATE image_steps SET cached=1, build=? WHERE config=?", (build_id, image))

    def memo_clear(self) -> int:
        return self._conn.execute("DELETE FROM build_memo").rowcount

    def cache_put(self, key: str, record: str) -> None:
        now = time.time()
        self._conn.execute("INSERT OR REPLACE INTO cache(key, record, created, used) VALUES (?,?,?,?)",
                           (key, record, now, now))

    def cache_put_first(self, key: str, record: str) -> str:
        """Record ``record`` unless a record is there already; the one that stays (one transaction)."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO cache(key, record, created, used) VALUES (?,?,?,?)",
                         (key, record, now, now))
            return str(conn.execute("SELECT record FROM cache WHERE key=?", (key,)).fetchone()[0])

    def cache_records(self) -> list[tuple[str, str, float]]:
        return self._conn.execute("SELECT key, record, used FROM cache").fetchall()

    def cache_delete(self, keys: Iterable[str]) -> None:
        self._conn.executemany("DELETE FROM cache WHERE key=?", ((k,) for k in keys))

    # stat cache -----------------------------------------------------------------
    def stat_get(self, path: str, size: int, ctime_ns: int, ino: int, mode: int) -> str | None:
        row = self._conn.execute(
            "SELECT digest FROM stat_cache WHERE path=? AND size=? AND ctime_ns=? AND ino=? AND mode=?",
            (path, size, ctime_ns, ino, mode)).fetchone()
        return str(row[0]) if row else None

    def stat_under(self, directory: str) -> dict[str, tuple[int, int, int, int, str]]:
        """Every stat cache row below ``directory``: path → (size, ctime_ns, ino, mode, digest).

        One range scan of the primary key, so a build's context costs one query, not one per file.
        """
        low = directory.rstrip("/") + "/"
        rows = self._conn.execute("SELECT path, size, ctime_ns, ino, mode, digest FROM stat_cache "
                                  "WHERE path >= ? AND path < ?", (low, low[:-1] + "0"))
        return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}

    def stat_put_many(self, rows: Iterable[tuple[str, int, int, int, int, str]]) -> None:
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO stat_cache(path, size, ctime_ns, ino, mode, digest) "
                             "VALUES (?,?,?,?,?,?)", rows)

    # remote sources (for cross-repository blob mounts) ---------------------------
    def add_source(self, repository: str, digest: str) -> None:
        self._conn.execute("INSERT OR IGNORE INTO sources(repository, digest) VALUES (?,?)", (repository, digest))

    def sources(self, digest: str) -> list[str]:
        rows = self._conn.execute("SELECT repository FROM sources WHERE digest=?", (digest,))
        return [r[0] for r in rows]

    # repository digests (RepoDigests) -----------------------------------------------------
    def add_repo_digest(self, manifest: str, repository: str, digest: str) -> None:
        self._conn.execute("INSERT OR IGNORE INTO repo_digests(manifest, repository, digest) VALUES (?,?,?)",
                           (manifest, repository, digest))

    def manifest_by_repo_digest(self, repository: str, digest: str) -> str | None:
        """The local manifest a remote ``repository@digest`` was pulled or pushed as (an index's digest too)."""
        row = self._conn.execute("SELECT manifest FROM repo_digests WHERE repository=? AND digest=? LIMIT 1",
                                 (repository, digest)).fetchone()
        return str(row[0]) if row else None

    def repo_digests(self, config: str) -> list[tuple[str, str]]:
        """(repository, digest) pairs naming image ``config`` remotely, through any of its manifests.

        By image ID, as docker lists them: one image pushed as Docker and as OCI has both.
        """
        rows = self._conn.execute(
            "SELECT DISTINCT r.repository, r.digest FROM repo_digests r JOIN images i ON i.manifest = r.manifest "
            "WHERE i.config=? ORDER BY r.repository, r.digest", (config,))
        return [(r[0], r[1]) for r in rows]

    # explaining cache misses and history timings (lamina build --explain, lamina history) ---------
    def cache_peek(self, key: str) -> str | None:
        """A cache record without marking it used (for explaining a miss)."""
        row = self._conn.execute("SELECT record FROM cache WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def lineage_find(self, file: str, parent: str, position: str) -> str | None:
        """The key last built on ``parent`` in ``file``, else the one last built at ``position``."""
        for column, value in (("parent", parent), ("position", position)):
            row = self._conn.execute(
                f"SELECT key FROM cache_lineage WHERE file=? AND {column}=? ORDER BY used DESC LIMIT 1",
                (file, value)).fetchone()
            if row:
                return str(row[0])
        return None

    def lineage_put_many(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Record (file, position, parent, key) rows as built now."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO cache_lineage(file, position, parent, key, used) "
                             "VALUES (?,?,?,?,?)", ((*r, now) for r in rows))

    def image_steps_put(self, config: str, build: str, steps: Iterable[tuple[int, float, bool]]) -> None:
        """Replace what is known of how ``config``'s history entries were made."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM image_steps WHERE config=?", (config,))
            conn.executemany("INSERT INTO image_steps(config, position, seconds, cached, build) VALUES (?,?,?,?,?)",
                             ((config, p, s, int(c), build) for p, s, c in steps))

    def image_steps(self, config: str) -> dict[int, tuple[float, bool, str]]:
        rows = self._conn.execute("SELECT position, seconds, cached, build FROM image_steps WHERE config=?",
                                  (config,))
        return {int(p): (float(s), bool(c), str(b)) for p, s, c, b in rows}

    # housekeeping (lamina.store.gc, lamina.store.check) ----------------------------------------
    def set_tag_if_image(self, name: str, manifest: str) -> bool:
        """Point ``name`` at ``manifest`` if that image is recorded, in one transaction (prune-safe)."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM images WHERE manifest=?", (manifest,)).fetchone() is None:
                return False
            conn.execute("INSERT OR REPLACE INTO tags(name, manifest, updated) VALUES (?,?,?)",
                         (name, manifest, time.time()))
        return True

    def prune_untagged_images(self, before: float) -> list[tuple[str, str]]:
        """Delete the images no tag names that were stored before ``before``; their (manifest, config)."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT manifest, config FROM images WHERE created < ? AND NOT EXISTS "
                                "(SELECT 1 FROM tags WHERE tags.manifest = images.manifest)", (before,)).fetchall()
            conn.executemany("DELETE FROM images WHERE manifest=?", ((r[0],) for r in rows))
        return [(str(m), str(c)) for m, c in rows]

    def prune_cache(self, keys: Iterable[str], before: float) -> list[str]:
        """Delete the records among ``keys`` not used since ``before``; the keys deleted."""
        deleted = []
        with self.transaction() as conn:
            for key in keys:
                if conn.execute("DELETE FROM cache WHERE key=? AND used < ?", (key, before)).rowcount:
                    deleted.append(key)
        return deleted

    def prune_lineage(self, before: float) -> int:
        """Forget what was built at a step when its record is gone, unless used since ``before``; rows deleted."""
        return int(self._conn.execute(
            "DELETE FROM cache_lineage WHERE used < ? AND NOT EXISTS "
            "(SELECT 1 FROM cache WHERE cache.key = cache_lineage.key)", (before,)).rowcount)

    def prune_image_steps(self) -> int:
        """Forget the step timings of images no longer in the store; rows deleted."""
        return int(self._conn.execute(
            "DELETE FROM image_steps WHERE NOT EXISTS "
            "(SELECT 1 FROM images WHERE images.config = image_steps.config)").rowcount)

    def layers(self) -> list[tuple[str, str, int]]:
        """Every layer row: (digest, diff_id, size)."""
        return self._conn.execute("SELECT digest, diff_id, size FROM layers").fetchall()

    def remove_layers(self, digests: Iterable[str]) -> None:
        """Forget layers whose blobs are gone (and where they were known to exist remotely)."""
        with self.transaction() as conn:
            for digest in digests:
                conn.execute("DELETE FROM layers WHERE digest=?", (digest,))
                conn.execute("DELETE FROM sources WHERE digest=?", (digest,))

    def cache_entries(self) -> list[tuple[str, str, float, float]]:
        """Every cache record: (key, record JSON, created, used)."""
        return self._conn.execute("SELECT key, record, created, used FROM cache").fetchall()

    def integrity(self) -> list[str]:
        """SQLite's own quick check: empty when the database file is sound."""
        rows = [str(r[0]) for r in self._conn.execute("PRAGMA quick_check")]
        return [] if rows == ["ok"] else rows
