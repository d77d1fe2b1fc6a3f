"""plain_header must give tarfile's own bytes for every entry it takes, and refuse the rest."""

from __future__ import annotations

import random
import tarfile

import pytest

from lamina.snapshot.tarheader import plain_header


def _tarfile_header(name: str, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes,
                    linkname: str = "", devmajor: int = 0, devminor: int = 0) -> bytes:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.size, info.mtime, info.type = mode, uid, gid, size, mtime, kind
    info.linkname, info.uname, info.gname = linkname, "", ""
    info.devmajor, info.devminor = devmajor, devminor
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _name(info_name: str, kind: bytes) -> bytes:
    return (info_name + "/" if kind == tarfile.DIRTYPE else info_name).encode()


CASES = [
    ("etc/passwd", 0o644, 0, 0, 1234, 1_700_000_000, tarfile.REGTYPE, "", 0, 0),
    ("usr/bin", 0o755, 0, 0, 0, 0, tarfile.DIRTYPE, "", 0, 0),
    ("bin/sh", 0o777, 0, 0, 0, 1, tarfile.SYMTYPE, "busybox", 0, 0),
    ("bin/ls", 0o4755, 1000, 1000, 0, 5, tarfile.LNKTYPE, "bin/busybox", 0, 0),
    ("dev/null", 0o666, 0, 0, 0, 7, tarfile.CHRTYPE, "", 1, 3),
    ("dev/sda", 0o660, 0, 6, 0, 7, tarfile.BLKTYPE, "", 8, 0),
    ("run/fifo", 0o600, 0, 0, 0, 7, tarfile.FIFOTYPE, "", 0, 0),
    ("a/.wh.gone", 0, 0, 0, 0, 9, tarfile.REGTYPE, "", 0, 0),
    ("a/.wh..wh..opq", 0, 0, 0, 0, 9, tarfile.REGTYPE, "", 0, 0),
    ("x" * 100, 0o644, 0, 0, 0, 0, tarfile.REGTYPE, "", 0, 0),  # exactly fits the name field
    ("y" * 99, 0o755, 0, 0, 0, 0, tarfile.DIRTYPE, "", 0, 0),  # fits with its trailing slash
    ("link", 0o777, 0, 0, 0, 0, tarfile.SYMTYPE, "t" * 100, 0, 0),
    ("big", 0o644, 8 ** 7 - 1, 8 ** 7 - 1, 8 ** 11 - 1, 8 ** 11 - 1, tarfile.REGTYPE, "", 0, 0),
    ("modebits", 0o170777, 0, 0, 0, 0, tarfile.REGTYPE, "", 0, 0),  # only the permission bits go in
]


@pytest.mark.parametrize("case", CASES, ids=[c[0][:20] for c in CASES])
def test_plain_entries_match_tarfile(case: tuple) -> None:  # type: ignore[type-arg]
    name, mode, uid, gid, size, mtime, kind, linkname, major, minor = case
    expected = _tarfile_header(name, mode, uid, gid, size, mtime, kind, linkname, major, minor)
    got = plain_header(_name(name, kind), mode, uid, gid, size, mtime, kind, linkname.encode(), major, minor)
    assert got == expected
    assert len(got) == tarfile.BLOCKSIZE
    parsed = tarfile.TarInfo.frombuf(got, "utf-8", "surrogateescape")  # and tarfile reads it back
    assert (parsed.name, parsed.size, parsed.mtime, parsed.linkname) == (name, size, mtime, linkname)


def test_random_entries_match_tarfile() -> None:
    rng = random.Random(7)
    kinds = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
             tarfile.FIFOTYPE]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._-/ "
    for _ in range(2000):
        kind = rng.choice(kinds)
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 99))).strip("/") or "n"
        link = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 100))) if kind in (
            tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
        fields = (rng.randint(0, 0o7777), rng.randint(0, 70000), rng.randint(0, 70000),
                  rng.randint(0, 8 ** 11 - 1) if kind == tarfile.REGTYPE else 0, rng.randint(0, 8 ** 11 - 1))
        major, minor = (rng.randint(0, 255), rng.randint(0, 255)) if kind == tarfile.CHRTYPE else (0, 0)
        expected = _tarfile_header(name, *fields, kind, link, major, minor)
        assert plain_header(_name(name, kind), *fields, kind, link.encode(), major, minor) == expected


@pytest.mark.parametrize("args", [
    (b"n" * 101, 0o644, 0, 0, 0, 0, tarfile.REGTYPE),  # a long name needs a PAX path record
    ("é".encode(), 0o644, 0, 0, 0, 0, tarfile.REGTYPE),  # so does a non-ASCII one
    (b"l", 0o777, 0, 0, 0, 0, tarfile.SYMTYPE, b"t" * 101),
    (b"l", 0o777, 0, 0, 0, 0, tarfile.SYMTYPE, "ü".encode()),
    (b"u", 0o644, 8 ** 7, 0, 0, 0, tarfile.REGTYPE),  # a uid past 7 octal digits
    (b"s", 0o644, 0, 0, 8 ** 11, 0, tarfile.REGTYPE),  # an 8 GiB file
    (b"t", 0o644, 0, 0, 0, -1, tarfile.REGTYPE),  # a time before 1970
    (b"d", 0o600, 0, 0, 0, 0, tarfile.CHRTYPE, b"", 8 ** 7, 0),
], ids=["long-name", "non-ascii", "long-link", "non-ascii-link", "uid", "size", "mtime", "devmajor"])
def test_entries_needing_pax_are_left_to_tarfile(args: tuple) -> None:  # type: ignore[type-arg]
    assert plain_header(*args) is None
