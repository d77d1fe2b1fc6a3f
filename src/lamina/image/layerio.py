"""Writing and reading layer blobs: one pass for tar → diff_id → compress → digest.

``LayerSink`` is a write-only file object: a tar writer streams into it, it
hashes the uncompressed bytes (the diff_id), compresses them and feeds a
:class:`~lamina.store.blobs.BlobWriter`-like sink that hashes the compressed
bytes (the digest). Nothing holds a whole layer in memory. Compression is
deterministic (no timestamp or file name in the gzip header) so the same tar
gives the same digest on every machine.

``open_layer`` is the reverse: a readable stream of the uncompressed tar,
whatever the compression, detected from the magic bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import IO, Any, BinaryIO, Protocol, cast

from lamina.errors import LayerError
from lamina.oci.digest import Digest

GZIP_LEVEL = 1  # isal level 1 ≈ zlib's default size at ~10x its speed
_BLOCK = 1 << 16  # bytes handed to the compressor at a time
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
    if compression == "gzip":
        from isal import isal_zlib

        compressor: _Compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)
        return compressor
    if compression == "zstd":
        import zstandard

        zstd: _Compressor = zstandard.ZstdCompressor(level=3).compressobj()
        return zstd
    if compression == "none":
        return _Identity()
    raise LayerError(f"unknown compression {compression!r}")


class LayerSink:
    """File-like sink: hashes what is written (diff_id), compresses it into ``out``."""

    def __init__(self, out: _Sink, compression: str = "gzip", *, background: bool = False) -> None:
        self._out = out
        self._hasher = hashlib.sha256()
        self._compressor = _compressor(compression)
        self._pending = bytearray()
        self.uncompressed_size = 0
        self._closed = False
        # compressing, hashing the blob and writing it on a thread of their own, while the caller
        # reads the next files: isal, hashlib and file writes all run without the GIL
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
        # isal's output depends on how its input is split, so it is fed fixed-size blocks:
        # the blob then depends only on the bytes, not on the writer's chunking.
        pending = self._pending
        view = memoryview(data)
        if pending:  # top up the partial block first
            taken = min(_BLOCK - len(pending), len(view))
            pending += view[:taken]
            view = view[taken:]
            if len(pending) < _BLOCK:
                return
            self._compress(pending)
            pending.clear()
        full = len(view) - len(view) % _BLOCK
        for start in range(0, full, _BLOCK):  # whole blocks straight from ``data``, uncopied
            self._compress(view[start:start + _BLOCK])
        pending += view[full:]

    def _compress(self, block: bytes | bytearray | memoryview) -> None:
        chunk = self._compressor.compress(block)
        if chunk:
            self._out.write(chunk)

    def tell(self) -> int:  # tarfile asks for it in stream mode
        return self.uncompressed_size

    def close(self) -> None:
        """Flush the compressor (idempotent). The caller commits ``out`` itself."""
        if not self._closed:
            if self._background is not None:
                self._background.finish()  # raises what the thread met (a full disk, ...)
            if self._pending:
                self._compress(self._pending)
                self._pending.clear()
            tail = self._compressor.flush()
            if tail:
                self._out.write(tail)
            self._closed = True

    def abort(self) -> None:
        """Stop without flushing, after a failure: the background thread (if any) ends."""
        if not self._closed:
            self._closed = True
            if self._background is not None:
                self._background.stop()

    @property
    def diff_id(self) -> Digest:
        return Digest.from_hasher(self._hasher)


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
