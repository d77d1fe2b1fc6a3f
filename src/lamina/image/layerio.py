"""Writing and reading layer blobs: one pass for tar → diff_id → compress → digest.

``LayerSink`` is a write-only file object: a tar writer streams into it, it
hashes the uncompressed bytes (the diff_id), compresses them and feeds a
:class:`~lamina.store.blobs.BlobWriter`-like sink that hashes the compressed
bytes (the digest). Nothing holds a whole layer in memory. Compression is
deterministic (no timestamp or file name in the gzip header) so the same tar
gives the same digest on every machine.

gzip is written as pigz writes it (:class:`_GzipBlocks`): the tar is cut into
blocks of ``GZIP_BLOCK`` bytes, each deflated on its own, primed with the 32 KiB
before it and ended by a sync flush, so the blocks of a big layer compress on
every core at once. It is one ordinary gzip member, and its bytes depend only on
the tar: not on the number of threads, nor on how the tar was written.

``open_layer`` is the reverse: a readable stream of the uncompressed tar,
whatever the compression, detected from the magic bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import IO, Any, BinaryIO, Protocol, cast

from lamina.errors import LayerError
from lamina.oci.digest import Digest

GZIP_LEVEL = 1  # isal level 1 ≈ zlib's default size at ~10x its speed
GZIP_BLOCK = 1 << 20  # gzip is deflated in blocks of this many bytes, in parallel (see _GzipBlocks)
_BLOCK = 1 << 16  # bytes handed to a streaming compressor (zstd) at a time
_WINDOW = 32 << 10  # deflate's window: each gzip block is primed with this much of the one before
# gzip member header: deflate, no flags, no time, no extra flags, OS unknown (as Go writes it)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_DEFLATE_END = b"\x03\x00"  # an empty final block with fixed codes: closes the blocks' sync-flushed stream
_MAGIC = 6  # the longest magic number detect_compression looks at (xz)


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Compressor(Protocol):
    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


def _compressor(compression: str) -> _Compressor:
    if compression == "zstd":
        import zstandard

        zstd: _Compressor = zstandard.ZstdCompressor(level=3).compressobj()
        return zstd
    if compression == "none":
        return _Identity()
    raise LayerError(f"unknown compression {compression!r}")


class LayerSink:
    """File-like sink: hashes what is written (diff_id), compresses it into ``out``.

    ``background``: compress on other threads while the caller produces the next bytes (gzip on
    every core, zstd on one thread); the blob is the same either way.
    """

    def __init__(self, out: _Sink, compression: str = "gzip", *, background: bool = False) -> None:
        self._out = out
        self._hasher = hashlib.sha256()
        self._pending = bytearray()
        self.uncompressed_size = 0
        self._closed = False
        self._background: _Background | None = None
        self._gzip: _GzipBlocks | None = None
        if compression == "gzip":
            self._gzip = _GzipBlocks(out, _cores() if background else 1)
            self._block_size = GZIP_BLOCK
        else:
            self._compressor = _compressor(compression)
            self._block_size = _BLOCK
            # compressing, hashing the blob and writing it on a thread of their own, while the caller
            # reads the next files: zstd, hashlib and file writes all run without the GIL
            self._background = _Background(self._feed) if background and compression != "none" else None

    def write(self, data: bytes) -> int:
        self._hasher.update(data)
        self.uncompressed_size += len(data)
        if self._background is not None:
            self._background.put(data if isinstance(data, bytes) else bytes(data))  # the caller may reuse a buffer
        else:
            self._feed(data)
        return len(data)

    def _feed(self, data: bytes) -> None:
        # the compressors' output depends on how their input is split, so they are fed fixed-size
        # blocks: the blob then depends only on the bytes, not on the writer's chunking
        size = self._block_size
        pending = self._pending
        view = memoryview(data)
        if pending:  # top up the partial block first
            taken = min(size - len(pending), len(view))
            pending += view[:taken]
            view = view[taken:]
            if len(pending) < size:
                return
            self._compress(pending)
            pending.clear()
        full = len(view) - len(view) % size
        for start in range(0, full, size):  # whole blocks straight from ``data``
            self._compress(view[start:start + size])
        pending += view[full:]

    def _compress(self, block: bytes | bytearray | memoryview) -> None:
        if self._gzip is not None:
            self._gzip.block(bytes(block))  # kept by other threads, and as the next block's dictionary
            return
        chunk = self._compressor.compress(block)
        if chunk:
            self._out.write(chunk)

    def tell(self) -> int:  # tarfile asks for it in stream mode
        return self.uncompressed_size

    def close(self) -> None:
        """Flush the compressor (idempotent). The caller commits ``out`` itself."""
        if self._closed:
            return
        if self._background is not None:
            self._background.finish()  # raises what the thread met (a full disk, ...)
        if self._gzip is not None:
            if self._pending:
                self._gzip.block(bytes(self._pending))
            self._gzip.finish()
        else:
            if self._pending:
                self._compress(self._pending)
            tail = self._compressor.flush()
            if tail:
                self._out.write(tail)
        self._pending.clear()
        self._closed = True

    def abort(self) -> None:
        """Stop without flushing, after a failure: the threads compressing (if any) end."""
        if not self._closed:
            self._closed = True
            if self._background is not None:
                self._background.stop()
            if self._gzip is not None:
                self._gzip.abort()

    @property
    def diff_id(self) -> Digest:
        return Digest.from_hasher(self._hasher)


def _cores() -> int:
    """Threads for gzip blocks: one per CPU this process may run on (a container's cpuset, not the
    host's count), at most 8. (lamina.syscalls.cpus, which the image layer may not import.)"""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        return max(1, min(8, os.cpu_count() or 1))


def _deflate(block: bytes, primer: bytes) -> tuple[bytes, int, int]:
    """One gzip block: raw deflate primed with the bytes before it, ended by a sync flush so the
    next block's deflate can follow it on a byte boundary; with its CRC-32 and length."""
    from isal import isal_zlib

    if primer:
        compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15, zdict=primer)
    else:
        compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15)
    data = compressor.compress(block) + compressor.flush(isal_zlib.Z_SYNC_FLUSH)
    return data, isal_zlib.crc32(block), len(block)


class _GzipBlocks:
    """One gzip member made of blocks deflated in parallel, written in order (pigz's format).

    A layer of one block is deflated on the caller's thread: threads start with the second.
    At most two blocks per thread are in flight, so memory stays a few MiB.
    """

    def __init__(self, out: _Sink, threads: int) -> None:
        self._out = out
        self._threads = threads
        self._previous = b""
        self._first: tuple[bytes, bytes] | None = None  # held until a second block shows threads are worth it
        self._pool: Any = None
        self._inflight: deque[Any] = deque()  # futures of _deflate, in stream order
        self._crc = 0
        self._size = 0
        out.write(_GZIP_HEADER)

    def block(self, data: bytes) -> None:
        primer, self._previous = self._previous[-_WINDOW:], data
        if self._threads <= 1:
            self._write(_deflate(data, primer))
            return
        if self._pool is None:
            if self._first is None:
                self._first = (data, primer)
                return
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="lamina-gzip")
            first, self._first = self._first, None
            self._inflight.append(self._pool.submit(_deflate, *first))
        self._inflight.append(self._pool.submit(_deflate, data, primer))
        while self._inflight and (self._inflight[0].done() or len(self._inflight) > 2 * self._threads):
            self._write(self._inflight.popleft().result())

    def finish(self) -> None:
        """Write what is left and the trailer (CRC-32 and length of the whole stream)."""
        try:
            if self._first is not None:
                first, self._first = self._first, None
                self._write(_deflate(*first))
            while self._inflight:
                self._write(self._inflight.popleft().result())
        finally:
            self.abort()
        self._out.write(_DEFLATE_END + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))

    def abort(self) -> None:
        """Drop the blocks in flight and end the threads."""
        for future in self._inflight:
            future.cancel()
        self._inflight.clear()
        self._first = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _write(self, deflated: tuple[bytes, int, int]) -> None:
        from isal import isal_zlib

        data, crc, length = deflated
        self._crc = isal_zlib.crc32_combine(self._crc, crc, length)
        self._size += length
        self._out.write(data)


class _Background:
    """One thread running ``work`` on each queued chunk, in order; its first error is raised to the caller."""

    def __init__(self, work: Callable[[bytes], None]) -> None:
        import queue
        import threading

        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # a few MiB in flight at most
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="lamina-compress", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[bytes], None]) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:  # after an error, drain what is queued so the caller never blocks
                try:
                    work(data)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._error = exc

    def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def finish(self) -> None:
        self.stop()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()


def detect_compression(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return "none"


class _Reader(io.RawIOBase):
    """Adapts any object with ``read`` to a raw stream, so it can be buffered and peeked."""

    def __init__(self, raw: Any, head: bytes = b"") -> None:
        self._raw = raw
        self._head = head  # bytes already read from ``raw``, served first

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            data, self._head = self._head[: len(buffer)], self._head[len(buffer):]
        else:
            data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        close = getattr(self._raw, "close", None)  # a bare reader may have only ``read``
        if close is not None:
            close()
        super().close()


def _read_head(raw: Any) -> bytes:
    """The first bytes, enough to tell the compression even from a stream that returns short reads."""
    head = b""
    while len(head) < _MAGIC and (chunk := raw.read(_MAGIC - len(head))):
        head += chunk
    return head


def open_layer(raw: BinaryIO) -> IO[bytes]:
    """A stream of the uncompressed tar from a possibly compressed stream ``raw``."""
    stream: Any = raw if hasattr(raw, "peek") else io.BufferedReader(_Reader(raw, _read_head(raw)), 1 << 20)
    kind = detect_compression(stream.peek(_MAGIC)[:_MAGIC])
    if kind == "gzip":
        from isal import igzip

        return cast(IO[bytes], igzip.IGzipFile(fileobj=stream, mode="rb"))  # type: ignore[no-untyped-call]
    if kind == "zstd":
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True))
    if kind == "bzip2":
        import bz2

        return bz2.BZ2File(stream)
    if kind == "xz":
        import lzma

        return lzma.LZMAFile(stream)
    return stream  # type: ignore[no-any-return]
