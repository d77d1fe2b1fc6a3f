"""Content-addressed blobs in an OCI image layout (``blobs/sha256/<hex>``).

A blob becomes visible under its digest only after its bytes were hashed,
matched the digest they were announced with, were fsync'ed, and were renamed
into place. A reader therefore never sees a half-written blob, and a crash
leaves at most a stray file in ``tmp/`` that :meth:`BlobStore.clean_tmp`
removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lamina.errors import DigestMismatch, StoreError
from lamina.oci.digest import Digest

LAYOUT_FILE = '{"imageLayoutVersion":"1.0.0"}'


class BlobWriter:
    """Streams bytes into a temp file while hashing; ``commit`` makes it a blob.

    Use as a context manager: leaving the block without ``commit`` (or with an
    exception) deletes the temp file.
    """

    def __init__(self, store: BlobStore, expected: Digest | None = None) -> None:
        self._store = store
        self._expected = expected
        self._hasher = hashlib.sha256()
        self._tmp = store.tmp_path("blob")
        self._file: BinaryIO | None = open(self._tmp, "xb")  # noqa: SIM115 - closed in commit/abort
        self.size = 0
        self.digest: Digest | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        assert self._file is not None, "write after commit"
        self._hasher.update(data)
        self._file.write(data)
        self.size += len(data)
        return len(data)

    def commit(self, *, sync: bool = True) -> Digest:
        """Verify against the expected digest (if any) and rename into place.

        ``sync=False`` only starts writing the bytes back to disk; the caller then makes the
        blob durable (:func:`sync_blobs`) before anything it keeps refers to it.
        """
        assert self._file is not None, "commit twice"
        digest = Digest.from_hasher(self._hasher)
        try:
            if self._expected is not None and digest != self._expected:
                raise DigestMismatch(f"blob {self._expected}: content hashes to {digest}")
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
            else:
                start_writeback(self._file.fileno())
            self._file.close()
            self._file = None
            target = self._store.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, target)
        except BaseException:
            self.abort()
            raise
        self.digest = digest
        return digest

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.digest is None:
            self.abort()


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting (sync_file_range):
    a later fsync then finds little left to write. Best effort: the fsync still makes it durable."""
    from lamina import syscalls

    with contextlib.suppress(OSError, AttributeError):  # AttributeError: a libc without the call
        syscalls.start_writeback(fd)


def sync_blobs(paths: list[Path]) -> None:
    """fsync the files ``paths`` (blobs committed with ``sync=False``) and the directories holding them."""
    for path in [*paths, *{p.parent for p in paths}]:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._tmp = root / "tmp"

    def init(self) -> None:
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text(LAYOUT_FILE)
        index = self.root / "index.json"
        if not index.exists():
            index.write_text('{"schemaVersion":2,"manifests":[]}')

    def tmp_path(self, kind: str) -> Path:
        return self._tmp / f"{kind}-{os.getpid()}-{os.urandom(6).hex()}"

    def path(self, digest: Digest) -> Path:
        if digest.algorithm != "sha256":
            raise StoreError(f"unsupported digest algorithm: {digest}")
        return self._blobs / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).exists()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as exc:
            raise StoreError(f"blob {digest} is not in the store") from exc

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError as exc:
            raise StoreError(f"blob {digest} is not in the store") from exc

    def read(self, digest: Digest) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def writer(self, expected: Digest | None = None) -> BlobWriter:
        return BlobWriter(self, expected)

    def put(self, data: bytes, expected: Digest | None = None) -> Digest:
        digest = Digest.of(data)
        if self.has(digest):
            if expected is not None and expected != digest:
                raise DigestMismatch(f"blob {expected}: content hashes to {digest}")
            return digest
        with self.writer(expected) as w:
            w.write(data)
            return w.commit()

    def delete(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def digests(self) -> Iterator[Digest]:
        for entry in os.scandir(self._blobs):
            yield Digest("sha256", entry.name)

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove temp files a dead process left (only old ones: others may be in use)."""
        removed = 0
        now = time.time()
        for entry in os.scandir(self._tmp):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > older_than and entry.is_file():
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
