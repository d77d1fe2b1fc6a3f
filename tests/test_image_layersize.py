"""docker's layer size from tar headers: the same figure as docker's directory walk, however the bytes come."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from lamina.image.layersize import (
    BackgroundSizeCounter,
    CompressedSizeCounter,
    SizeCounter,
    blob_size,
    layer_size,
)
from lamina.snapshot.diff import write_layer_from_dir


def docker_walk_size(root: Path) -> int:
    """moby's pkg/directory.Size: every non-directory's lstat size, each inode once."""
    seen: set[int] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISDIR(st.st_mode) or st.st_size == 0 or st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            total += st.st_size
    return total


def tar_of(entries: list[tuple[str, str, bytes | str]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(value, bytes)
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "char": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                assert isinstance(value, str)
                info.linkname = value
            tar.addfile(info)
    return buf.getvalue()


LONG = "t/" + "x" * 150 + "/é-target"  # longer than the 100-byte header field, not ASCII

ENTRIES: list[tuple[str, str, bytes | str]] = [
    ("etc", "dir", b""),
    ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n"),
    ("bin/busybox", "file", os.urandom(5000)),
    ("bin/sh", "symlink", "busybox"),
    ("bin/ash", "hardlink", "bin/busybox"),
    ("lib/long", "symlink", LONG),
    ("dev/null", "char", b""),
    ("run/fifo", "fifo", b""),
    ("etc/.wh.gone", "file", b""),
    ("etc/.wh..wh..opq", "file", b""),
    ("empty", "file", b""),
    ("d" * 120 + "/file", "file", b"a long name"),
]
EXPECTED = 26 + 5000 + len("busybox") + len(LONG.encode()) + len(b"a long name")


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_counts_files_and_symlink_targets_only(fmt: int) -> None:
    assert layer_size(io.BytesIO(tar_of(ENTRIES, fmt))) == EXPECTED


@pytest.mark.parametrize("piece", [1, 7, 511, 512, 513, 4096, 1 << 20])
def test_any_chunking_gives_the_same_size(piece: int) -> None:
    data = tar_of(ENTRIES)
    counter = SizeCounter()
    for start in range(0, len(data), piece):
        counter.feed(data[start:start + piece])
    assert counter.size == EXPECTED


def test_agrees_with_dockers_directory_walk(tmp_path: Path) -> None:
    """Random trees: lamina's committed-layer size, the header count and docker's walk all agree."""
    rnd = random.Random(7)
    for round_ in range(5):
        root = tmp_path / f"tree{round_}"
        root.mkdir()
        files: list[Path] = []
        for i in range(40):
            parent = root / f"d{rnd.randint(0, 5)}"
            parent.mkdir(exist_ok=True)
            roll = rnd.random()
            path = parent / f"e{i}"
            if roll < 0.6 or not files:
                path.write_bytes(os.urandom(rnd.randint(0, 3000)))
                files.append(path)
            elif roll < 0.8:
                path.symlink_to("../" * rnd.randint(0, 3) + "target" * rnd.randint(1, 30))
            else:
                os.link(rnd.choice(files), path)
        buf = io.BytesIO()
        stats = write_layer_from_dir(root, buf)
        expected = docker_walk_size(root)
        assert layer_size(io.BytesIO(buf.getvalue())) == expected
        assert stats.content_bytes == expected


def test_compressed_blobs() -> None:
    plain = tar_of(ENTRIES)
    half = len(plain) // 2
    zstd = zstandard.ZstdCompressor()
    blobs = {
        "plain": plain,
        "gzip": gzip.compress(plain),
        "gzip members": gzip.compress(plain[:half]) + gzip.compress(plain[half:]),  # pigz, docker
        "zstd frames": zstd.compress(plain[:half]) + zstd.compress(plain[half:]),
        "bzip2": bz2.compress(plain),
        "xz": lzma.compress(plain),
    }
    for name, blob in blobs.items():
        assert blob_size(io.BytesIO(blob), chunk=1000) == EXPECTED, name
        background = BackgroundSizeCounter(depth=2)
        for start in range(0, len(blob), 333):
            background.feed(blob[start:start + 333])
        assert background.close() == EXPECTED, name


def test_a_compression_bomb_is_counted_in_bounded_pieces() -> None:
    big = 300 << 20
    header = tarfile.TarInfo("zeros")
    header.size = big
    head = header.tobuf(tarfile.PAX_FORMAT)
    blob = zstandard.ZstdCompressor().compress(head + bytes(big) + bytes(1024))
    pieces: list[int] = []
    counter = CompressedSizeCounter()
    feed = counter.counter.feed

    def spy(data: bytes) -> None:
        pieces.append(len(data))
        feed(data)

    counter.counter.feed = spy  # type: ignore[method-assign]
    counter.feed(blob)
    counter.close()
    assert counter.size == big and max(pieces) <= 1 << 20


@pytest.mark.parametrize("damage", ["checksum", "truncated", "garbage", "empty", "bad gzip"])
def test_malformed_input_leaves_the_size_unknown(damage: str) -> None:
    data = tar_of(ENTRIES)
    if damage == "checksum":
        data = data[:148] + b"0000000\0" + data[156:]
    elif damage == "truncated":
        data = data[:1500]
    elif damage == "garbage":
        data = os.urandom(4096)
    elif damage == "empty":
        data = b""
    else:
        data = gzip.compress(data)[:-40] + b"\0" * 40
    assert blob_size(io.BytesIO(data)) is None


def test_a_tar_without_end_blocks_still_counts() -> None:
    data = tar_of(ENTRIES)
    assert layer_size(io.BytesIO(data.rstrip(b"\0") + b"\0" * (-len(data.rstrip(b"\0")) % 512))) == EXPECTED
