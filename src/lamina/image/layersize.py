"""Docker's size of a layer, read from its tar headers as the bytes go past.

docker (overlay2) reports a layer's size as the size of its unpacked
directory without the directories: the bytes of its regular files (a file
hard-linked twice counts once) plus the length of each symlink's target;
directories, devices, fifos and whiteouts count nothing. That is neither the
blob's size nor the tar's (headers and padding), so it is counted from the
headers alone: file contents are skipped as they stream by, never kept.

:class:`SizeCounter` takes the plain tar in pieces of any size (``feed``), so
it can ride along a download or an unpack; :class:`CompressedSizeCounter`
takes the blob as stored (gzip, zstd, bzip2, xz or plain) and decompresses it
on the way, holding at most one bounded piece of output. A malformed tar does
not raise: the size is then unknown (``None``), as it is for a stream cut
short. Integrity is the digests' business, not this module's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any, Protocol, cast

_BLOCK = 512
_MAX_EXTENSION = 1 << 20  # a pax or GNU long-name record bigger than this is not a real layer's
_OUT_CHUNK = 1 << 20  # most bytes one decompression step may produce
_REGULAR = frozenset(b"07\0")
_EXTENSIONS = frozenset(b"xKLg")  # pax per-entry, GNU long link, GNU long name, pax global


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class SizeCounter:
    """Counts docker's size of a plain layer tar fed to it in pieces."""

    def __init__(self) -> None:
        self._size = 0
        self._header = bytearray()
        self._skip = 0  # content and padding of the current entry still to pass
        self._capture: bytearray | None = None  # the body of an extension header being read
        self._capture_left = 0
        self._capture_type = 0
        self._capture_pad = 0
        self._pax: dict[bytes, bytes] = {}  # overrides for the next entry
        self._long_link: bytes | None = None
        self._ended = False
        self._failed = False
        self._fed = False

    @property
    def size(self) -> int | None:
        """The size so far: None after malformed input, or in the middle of an entry."""
        if self._failed or not self._fed:
            return None
        if self._ended:
            return self._size
        between = not (self._header or self._skip or self._capture is not None or self._pax or self._long_link)
        return self._size if between else None  # Go's reader also takes a missing end block

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self._fed = self._fed or bool(view)
        while view and not (self._ended or self._failed):
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
            elif self._capture is not None:
                step = min(self._capture_left, len(view))
                self._capture += view[:step]
                self._capture_left -= step
                view = view[step:]
                if not self._capture_left:
                    self._extension(bytes(self._capture))
            else:
                step = min(_BLOCK - len(self._header), len(view))
                self._header += view[:step]
                view = view[step:]
                if len(self._header) == _BLOCK:
                    block, self._header = bytes(self._header), bytearray()
                    self._entry(block)

    def _entry(self, block: bytes) -> None:
        if not any(block):
            self._ended = True  # docker stops at the first zero block too
            return
        if not _checksum_ok(block):
            self._failed = True
            return
        kind = block[156]
        size = _number(block[124:136])
        if size is None:
            self._failed = True
            return
        if kind in _EXTENSIONS:
            if size > _MAX_EXTENSION:
                self._failed = True
                return
            self._capture, self._capture_left, self._capture_type = bytearray(), size, kind
            self._capture_pad = -size % _BLOCK
            if not size:
                self._extension(b"")
            return
        pax, self._pax = self._pax, {}
        long_link, self._long_link = self._long_link, None
        if b"size" in pax:
            size = int(pax[b"size"]) if pax[b"size"].isdigit() else size
        if kind in _REGULAR:
            self._size += size
        elif kind == ord("2"):
            target = pax.get(b"linkpath", long_link if long_link is not None else block[157:257].split(b"\0")[0])
            self._size += len(target)
        self._skip = _padded(size)

    def _extension(self, body: bytes) -> None:
        """A pax or GNU record's body is complete: keep what the next entry needs."""
        kind, self._capture = self._capture_type, None
        self._skip = self._capture_pad  # the body's padding
        if kind == ord("x"):
            parsed = _pax_records(body)
            if parsed is None:
                self._failed = True
                return
            self._pax = parsed
        elif kind == ord("K"):
            self._long_link = body.rstrip(b"\0")


class CompressedSizeCounter:
    """A :class:`SizeCounter` behind a decompressor chosen from the first bytes fed."""

    def __init__(self) -> None:
        self.counter = SizeCounter()
        self._head = b""
        self._decompress: _Decompressor | None = None
        self._failed = False

    @property
    def size(self) -> int | None:
        return None if self._failed else self.counter.size

    def feed(self, data: bytes) -> None:
        if self._failed or not data:
            return
        if self._decompress is None:
            self._head += data
            if len(self._head) < 6:
                return
            data, self._head = self._head, b""
            self._decompress = _decompressor(data[:6], self.counter.feed)
        try:
            self._decompress.write(data)
        except Exception:  # noqa: BLE001 - any codec error just leaves the size unknown
            self._failed = True

    def close(self) -> None:
        """The stream ended: a tiny plain blob shorter than the magic numbers is fed now."""
        if self._decompress is None and self._head:
            self._decompress = _decompressor(self._head, self.counter.feed)
            self._decompress.write(self._head)
            self._head = b""


class BackgroundSizeCounter:
    """A :class:`CompressedSizeCounter` running in its own thread, so decompressing overlaps a download.

    ``feed`` queues the bytes (blocking while ``depth`` pieces wait: memory stays
    bounded, and a download never outruns the count by more than that);
    :meth:`close` waits for the count and returns the size. Always close it.
    """

    def __init__(self, depth: int = 8) -> None:
        import queue
        import threading

        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._counter = CompressedSizeCounter()
        self._thread = threading.Thread(target=self._run, name="lamina-layersize", daemon=True)
        self._thread.start()
        self._closed = False

    def feed(self, data: bytes) -> None:
        self._queue.put(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._counter.feed(data)

    def close(self) -> int | None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
            self._counter.close()
        return self._counter.size


def layer_size(plain: Readable, chunk: int = 1 << 20) -> int | None:
    """Docker's size of the plain tar ``plain``, reading it to its end (the caller closes it)."""
    counter = SizeCounter()
    while data := plain.read(chunk):
        counter.feed(data)
    return counter.size


def blob_size(blob: Readable, chunk: int = 1 << 20) -> int | None:
    """Docker's size of a layer blob as stored (any compression), read to its end."""
    counter = CompressedSizeCounter()
    while data := blob.read(chunk):
        counter.feed(data)
    counter.close()
    return counter.size


# -- decompressors that push bounded pieces of output ---------------------------------------------

class _Decompressor(Protocol):
    def write(self, data: bytes, /) -> None: ...


class _Plain:
    def __init__(self, out: _Sink) -> None:
        self._out = out

    def write(self, data: bytes) -> None:
        self._out(data)


class _Sink(Protocol):
    def __call__(self, data: bytes, /) -> None: ...


class _Gzip:
    """gzip members one after another (``pigz`` and docker write several), with bounded output."""

    def __init__(self, out: _Sink) -> None:
        from isal import isal_zlib

        self._decompressobj: Callable[..., Any] = isal_zlib.decompressobj
        self._inflate = self._new()
        self._out = out

    def _new(self) -> Any:
        return self._decompressobj(wbits=31)

    def write(self, data: bytes) -> None:
        while data:
            piece = self._inflate.decompress(data, _OUT_CHUNK)
            if piece:
                self._out(piece)
            if self._inflate.eof:
                data = self._inflate.unused_data
                self._inflate = self._new()
            else:
                data = self._inflate.unconsumed_tail


class _Zstd:
    """zstd frames one after another; the stream writer hands out pieces of at most 1 MiB."""

    def __init__(self, out: _Sink) -> None:
        import zstandard

        class _Out:
            def write(self, data: bytes) -> int:
                out(bytes(data))
                return len(data)

        self._writer = zstandard.ZstdDecompressor().stream_writer(cast(IO[bytes], _Out()), write_size=_OUT_CHUNK)

    def write(self, data: bytes) -> None:
        self._writer.write(data)


class _Stdlib:
    """bzip2 and xz (rare in registries): the stdlib's decompressors, bounded the same way."""

    def __init__(self, out: _Sink, kind: str) -> None:
        import bz2
        import lzma

        self._new = bz2.BZ2Decompressor if kind == "bzip2" else lzma.LZMADecompressor
        self._inflate = self._new()
        self._out = out

    def write(self, data: bytes) -> None:
        while True:
            piece = self._inflate.decompress(data, _OUT_CHUNK)
            if piece:
                self._out(piece)
            if self._inflate.eof:
                data = self._inflate.unused_data
                if not data:
                    return
                self._inflate = self._new()
            elif self._inflate.needs_input:
                return
            else:
                data = b""


def _decompressor(head: bytes, out: _Sink) -> _Decompressor:
    if head.startswith(b"\x1f\x8b"):
        return _Gzip(out)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return _Zstd(out)
    if head.startswith(b"BZh"):
        return _Stdlib(out, "bzip2")
    if head.startswith(b"\xfd7zXZ\x00"):
        return _Stdlib(out, "xz")
    return _Plain(out)


# -- tar header fields -----------------------------------------------------------------------------

def _padded(size: int) -> int:
    return size + (-size % _BLOCK)


def _number(field: bytes) -> int | None:
    """A numeric header field: octal text, or GNU's base-256 when the top bit is set."""
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return None if field[0] & 0x40 else value  # negative sizes are nonsense
    text = field.split(b"\0")[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    if stored is None:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32  # the field itself counts as 8 spaces
    if stored == unsigned:
        return True
    high = sum(1 for b in block if b > 127) - sum(1 for b in block[148:156] if b > 127)
    return stored == unsigned - 256 * high  # old tars summed signed chars


def _pax_records(body: bytes) -> dict[bytes, bytes] | None:
    """``"%d %s=%s\\n"`` records; None when they do not parse."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(body):
        if body[pos] == 0:
            break
        space = body.find(b" ", pos)
        if space < 0 or not body[pos:space].isdigit():
            return None
        length = int(body[pos:space])
        record = body[space + 1:pos + length]
        if length <= space - pos or not record.endswith(b"\n") or b"=" not in record:
            return None
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records


__all__ = ["BackgroundSizeCounter", "CompressedSizeCounter", "SizeCounter", "blob_size", "layer_size"]
