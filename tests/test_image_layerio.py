"""Layer blobs: one pass to diff_id + compressed digest, and reading back any compression."""

from __future__ import annotations

import bz2
import gc
import gzip
import hashlib
import io
import lzma
import random
import tarfile
import threading
import warnings
import zlib

import pytest
import zstandard

from lamina.errors import LayerError
from lamina.image import layerio
from lamina.image.layerio import GZIP_BLOCK, LayerSink, detect_compression, open_layer
from lamina.oci.digest import Digest


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("etc/hostname", b"lamina\n"), ("big", bytes(range(256)) * 2048)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR = _tar()

DECOMPRESS = {
    "gzip": gzip.decompress,
    "zstd": lambda b: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(b), read_across_frames=True).read(),
    "none": lambda b: b,
}


def _sink(data: bytes, compression: str, chunk: int = 1000) -> tuple[bytes, LayerSink]:
    out = io.BytesIO()
    sink = LayerSink(out, compression)
    for start in range(0, len(data), chunk):
        assert sink.write(data[start:start + chunk]) == len(data[start:start + chunk])
    sink.close()
    sink.close()  # idempotent
    return out.getvalue(), sink


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_sink_diff_id_and_round_trip(compression: str) -> None:
    blob, sink = _sink(TAR, compression)
    assert sink.diff_id == Digest("sha256", hashlib.sha256(TAR).hexdigest())
    assert sink.uncompressed_size == sink.tell() == len(TAR)
    assert DECOMPRESS[compression](blob) == TAR
    assert detect_compression(blob[:6]) == compression
    if compression != "none":
        assert len(blob) < len(TAR)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_sink_is_deterministic(compression: str) -> None:
    first, _ = _sink(TAR, compression, chunk=1000)
    second, _ = _sink(TAR, compression, chunk=1000)
    rechunked, _ = _sink(TAR, compression, chunk=7777)
    assert first == second == rechunked


_PINNED_BLOBS = {
    "gzip": "d6419cafb534b8719a89862b398f70db4504e345ab86e04da8edcc1bb8608299",
    "zstd": "22be0c1740bd36dd47c2eca505d83c747eda472ca4f05d4c3e46a79462c4b4ad",
    "none": "cc09a421d955a65868479a334e7de3d9d05679316eb9185f43fcaa5d91024b7e",
}


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
@pytest.mark.parametrize("compression", sorted(_PINNED_BLOBS))
def test_sink_blob_is_pinned_whatever_the_write_sizes(compression: str, background: bool) -> None:
    """Whole writes, tiny ones, writes larger than a compressor block, and compression on a thread
    of its own all give the same blob."""
    sizes = [1, 511, 65536, 3, 200_000, 70_000, 4096]
    splits, start = [], 0
    while start < len(TAR):
        size = sizes[len(splits) % len(sizes)]
        splits.append(TAR[start:start + size])
        start += size
    for chunks in ([TAR], splits, [bytearray(c) for c in splits]):
        out = io.BytesIO()
        sink = LayerSink(out, compression, background=background)
        for chunk in chunks:
            sink.write(chunk)
            if isinstance(chunk, bytearray):
                chunk[:] = b"\0" * len(chunk)  # the caller reuses its buffer at once
        sink.close()
        assert hashlib.sha256(out.getvalue()).hexdigest() == _PINNED_BLOBS[compression]
        assert sink.diff_id == Digest.of(TAR)


def _big_tar() -> bytes:
    """A few gzip blocks of text and noise, ending mid-block."""
    rng = random.Random(7)
    words = [bytes(rng.choices(b"abcdefghij ", k=rng.randint(2, 9))) for _ in range(500)]
    text = b" ".join(rng.choices(words, k=600_000))
    return text + rng.randbytes(GZIP_BLOCK + 12345)


BIG = _big_tar()


def _single_member(blob: bytes) -> bytes:
    """The content of ``blob`` when it is exactly one gzip member (gzip.decompress takes several)."""
    inflate = zlib.decompressobj(31)
    data = inflate.decompress(blob) + inflate.flush()
    assert inflate.eof and not inflate.unused_data
    return data


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gzip_blocks_are_the_same_bytes_on_any_number_of_cores(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """Big layers deflate on every core in blocks (pigz's format): one gzip member, whose bytes
    depend neither on the cores nor on the write sizes, so the digest is the same on every machine."""
    monkeypatch.setattr(layerio, "_cores", lambda: threads)
    assert len(BIG) > 4 * GZIP_BLOCK
    blobs = set()
    for background, chunk in ((True, 1 << 16), (True, 3 * GZIP_BLOCK + 5), (False, 100_003)):
        out = io.BytesIO()
        sink = LayerSink(out, "gzip", background=background)
        for start in range(0, len(BIG), chunk):
            sink.write(BIG[start:start + chunk])
        sink.close()
        assert sink.diff_id == Digest.of(BIG)
        blobs.add(out.getvalue())
    (blob,) = blobs
    assert _single_member(blob) == BIG
    assert len(blob) < len(BIG) * 0.6  # priming each block with the one before keeps the text's ratio
    assert hashlib.sha256(blob).hexdigest() == "35c97724daa9560f4b9440ff5ee129994aef41c697511c0464d18ba0fb23442b"
    assert not any(t.name.startswith("lamina-gzip") for t in threading.enumerate())


def test_a_one_block_layer_starts_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self))
    sink = LayerSink(io.BytesIO(), "gzip", background=True)
    sink.write(TAR)
    sink.close()
    assert started == []


class _FullDisk:
    def __init__(self, after: int) -> None:
        self.left = after

    def write(self, data: bytes) -> int:
        self.left -= 1
        if self.left < 0:
            raise OSError(28, "No space left on device")
        return len(data)


def test_background_error_reaches_the_caller() -> None:
    sink = LayerSink(_FullDisk(after=1), "zstd", background=True)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(200):  # the error surfaces at a later write or at close
            sink.write(bytes(range(256)) * 4096)
        sink.close()
    sink.abort()
    assert not any(t.name == "lamina-compress" for t in threading.enumerate())


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_abort_ends_the_background_threads(compression: str) -> None:
    sink = LayerSink(io.BytesIO(), compression, background=True)
    sink.write(BIG)
    sink.abort()
    sink.abort()  # idempotent
    assert not any(t.name.startswith(("lamina-compress", "lamina-gzip")) for t in threading.enumerate())


def test_gzip_error_reaches_the_caller_and_ends_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layerio, "_cores", lambda: 2)
    sink = LayerSink(_FullDisk(after=2), "gzip", background=True)
    with pytest.raises(OSError, match="No space left"):
        sink.write(BIG)
        sink.close()
    sink.abort()
    assert not any(t.name.startswith("lamina-gzip") for t in threading.enumerate())


def test_gzip_header_has_no_time_or_name() -> None:
    blob, _ = _sink(TAR, "gzip")
    flags, mtime = blob[3], blob[4:8]
    assert flags & 0x08 == 0  # FNAME
    assert mtime == b"\0\0\0\0"


def test_sink_of_nothing() -> None:
    blob, sink = _sink(b"", "gzip")
    assert sink.diff_id == Digest.of(b"")
    assert _single_member(blob) == b""


def test_unknown_compression() -> None:
    with pytest.raises(LayerError, match="unknown compression 'lz4'"):
        LayerSink(io.BytesIO(), "lz4")


def test_sink_feeds_a_tar_writer() -> None:
    out = io.BytesIO()
    sink = LayerSink(out, "gzip")
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        info = tarfile.TarInfo("a")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    sink.close()
    plain = gzip.decompress(out.getvalue())
    assert sink.diff_id == Digest.of(plain)


COMPRESSED = {
    "gzip": gzip.compress(TAR, mtime=0),
    "zstd": zstandard.ZstdCompressor().compress(TAR),
    "bzip2": bz2.compress(TAR),
    "xz": lzma.compress(TAR),
    "none": TAR,
}


@pytest.mark.parametrize(("head", "expected"), [
    (COMPRESSED["gzip"][:6], "gzip"),
    (COMPRESSED["zstd"][:6], "zstd"),
    (COMPRESSED["bzip2"][:6], "bzip2"),
    (COMPRESSED["xz"][:6], "xz"),
    (TAR[:6], "none"),
    (b"", "none"),
    (b"\x1f", "none"),
])
def test_detect_compression(head: bytes, expected: str) -> None:
    assert detect_compression(head) == expected


class ReadOnly:
    """A non-seekable stream with nothing but ``read``, giving at most ``chunk`` bytes per call."""

    def __init__(self, data: bytes, chunk: int | None = None) -> None:
        self._data = io.BytesIO(data)
        self._chunk = chunk

    def read(self, n: int = -1) -> bytes:
        if self._chunk is not None and (n < 0 or n > self._chunk):
            n = self._chunk
        return self._data.read(n)


@pytest.mark.parametrize("chunk", [None, 1, 3], ids=["whole", "trickle-1", "trickle-3"])
@pytest.mark.parametrize("kind", list(COMPRESSED))
def test_open_layer_from_a_bare_reader(kind: str, chunk: int | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an exception in a finalizer would surface here
        stream = open_layer(ReadOnly(COMPRESSED[kind], chunk))  # type: ignore[arg-type]
        assert stream.read() == TAR
        stream.close()
        del stream
        gc.collect()


@pytest.mark.parametrize("kind", list(COMPRESSED))
def test_open_layer_from_a_buffered_file(kind: str) -> None:
    raw = io.BufferedReader(io.BytesIO(COMPRESSED[kind]))  # peekable: used as is
    with open_layer(raw) as stream:
        assert stream.read() == TAR


def test_open_layer_streams_into_tarfile() -> None:
    with tarfile.open(None, "r|", open_layer(ReadOnly(COMPRESSED["zstd"], 512))) as tar:  # type: ignore[arg-type]
        assert [m.name for m in tar] == ["etc/hostname", "big"]


def test_open_layer_of_an_empty_stream() -> None:
    assert open_layer(ReadOnly(b"")).read() == b""  # type: ignore[arg-type]
