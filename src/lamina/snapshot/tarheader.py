"""The ustar header of a plain tar entry, byte for byte what ``tarfile`` writes for it, made fast.

Committing a layer encodes one header per file, and ``TarInfo.tobuf`` spends
~45 µs on each (it formats every field through generic helpers and checks
what needs a PAX record): about half of committing a tree of many small files.
A plain entry — ASCII name and link target of at most 100 bytes, no PAX
records (no xattrs), numbers that fit their octal fields, empty user and group
names — needs none of that, and :func:`plain_header` packs it in one
``struct`` call. Anything else returns None and goes through ``tarfile``, so
the layer's bytes (and digests) are the same either way; the tests compare the
two on every kind of entry.
"""

from __future__ import annotations

import struct

# name, mode, uid, gid, size, mtime, checksum, type, linkname, magic+version, uname, gname,
# devmajor, devminor, prefix, padding: the POSIX ustar block
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_MAGIC = b"ustar\x0000"
_SPACES = b" " * 8  # the checksum field counts as spaces while the checksum is summed
_NO_DEVICE = b""
_MAX_ID = 8 ** 7  # what 7 octal digits hold
_MAX_BIG = 8 ** 11
_DEVICES = (b"3", b"4")  # tarfile.CHRTYPE, tarfile.BLKTYPE


def plain_header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes,
                 linkname: bytes = b"", devmajor: int = 0, devminor: int = 0) -> bytes | None:
    """The 512-byte header of a plain entry as ``tarfile`` (PAX format) encodes it, or None.

    ``name`` carries a directory's trailing ``/``; ``kind`` is a tarfile type
    byte (``tarfile.REGTYPE`` …). None means the entry needs what only
    ``tarfile`` does (a PAX record, a long or non-ASCII name).
    """
    if (len(name) > 100 or len(linkname) > 100 or not name.isascii() or not linkname.isascii()
            or not (0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID and 0 <= size < _MAX_BIG and 0 <= mtime < _MAX_BIG)):
        return None
    if kind in _DEVICES:
        if not (0 <= devmajor < _MAX_ID and 0 <= devminor < _MAX_ID):
            return None
        major, minor = b"%07o\0" % devmajor, b"%07o\0" % devminor
    else:
        major = minor = _NO_DEVICE
    block = _USTAR.pack(name, b"%07o\0" % (mode & 0o7777), b"%07o\0" % uid, b"%07o\0" % gid,
                        b"%011o\0" % size, b"%011o\0" % mtime, _SPACES, kind, linkname, _MAGIC,
                        b"", b"", major, minor, b"")
    return block[:148] + b"%06o\0" % sum(block) + block[155:]


__all__ = ["plain_header"]
