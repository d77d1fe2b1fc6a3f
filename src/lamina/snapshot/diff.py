"""An overlay upper dir (or a whole root) → a deterministic OCI layer tar.

The walk is sorted bytewise within each directory, parents before children,
and the tar is PAX with numeric owners, empty user and group names and integer
mtimes, so the same tree always gives the same bytes (and the same diff_id).
Overlay's markers become OCI whiteouts: a 0:0 character device ``NAME`` is
written as the empty file ``.wh.NAME``, an opaque directory is followed by
``DIR/.wh..wh..opq``, and ``trusted.overlay.*`` xattrs never appear.

The lower dirs are consulted so that markers which would hide nothing are left
out: overlayfs marks every directory it creates in a merged directory opaque,
and a whiteout can outlive the file it hid.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NamedTuple, Protocol

from lamina.errors import LayerError
from lamina.model import model
from lamina.snapshot._fs import (
    OPAQUE_MARKER,
    WHITEOUT_PREFIX,
    is_opaque,
    is_whiteout,
    lstat_or_none,
    read_xattrs,
)
from lamina.snapshot.tarheader import plain_header

_RUNTIME_STUB_DIRS = (b"dev", b"proc", b"sys", b"run")
_RUNTIME_STUB_FILES = (b"etc/hosts", b"etc/hostname", b"etc/resolv.conf")


class Writable(Protocol):
    """Where a layer tar goes: a :class:`~lamina.image.layerio.LayerSink`, a file, a BytesIO."""

    def write(self, data: bytes, /) -> int: ...


@model
class DiffStats:
    """What a layer holds: tar entries, whiteout markers among them, docker's size (files' bytes, symlinks' targets)."""

    entries: int
    whiteouts: int
    content_bytes: int


class LayerEntry(NamedTuple):
    """One tar entry as tests and tools compare them (directories without the trailing ``/``)."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str


def write_layer(
    upper: Path, lowers: Sequence[Path], out: Writable, *, clamp_mtime: int | None = None
) -> DiffStats:
    """Write the changes in ``upper`` (overlay format) as a layer tar to ``out``.

    ``lowers`` are the layers below, top-most first. ``clamp_mtime`` caps every
    mtime (``SOURCE_DATE_EPOCH``). ``out`` is neither flushed nor closed.
    """
    writer = _TarWriter(out, clamp_mtime)
    _walk(writer, os.fsencode(upper), b"", _LowerView(lowers), hidden=False)
    return writer.close()


def write_layer_from_dir(root: Path, out: Writable, *, clamp_mtime: int | None = None) -> DiffStats:
    """Write the whole tree ``root`` as a layer tar: no whiteouts, devices stay devices."""
    writer = _TarWriter(out, clamp_mtime)
    _walk(writer, os.fsencode(root), b"", None, hidden=True)
    return writer.close()


def prune_runtime_stubs(upper: Path, lowers: Sequence[Path]) -> tuple[str, ...]:
    """Remove from ``upper`` the mountpoints a container runtime created; return what went.

    Only stubs no lower layer has are removed: the empty directories ``dev``,
    ``proc``, ``sys``, ``run`` and the empty files ``etc/hosts``,
    ``etc/hostname``, ``etc/resolv.conf``. Then a parent of a removed stub
    goes too if it is now empty and was copied up unchanged (same mode and
    owner as below), so ``RUN true`` leaves an empty layer.
    """
    root = os.fsencode(upper)
    view = _LowerView(lowers)
    removed: list[bytes] = []
    for rel in _RUNTIME_STUB_DIRS + _RUNTIME_STUB_FILES:
        path = root + b"/" + rel
        st = lstat_or_none(path)
        if st is None or view.find(rel) is not None:
            continue
        if (
            rel in _RUNTIME_STUB_DIRS
            and stat.S_ISDIR(st.st_mode)
            and not os.listdir(path)
            and not is_opaque(path)
        ):
            os.rmdir(path)
            removed.append(rel)
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0 and rel in _RUNTIME_STUB_FILES:
            os.unlink(path)
            removed.append(rel)
    parents = sorted({rel.rpartition(b"/")[0] for rel in removed if b"/" in rel}, reverse=True)
    for rel in parents:
        if _is_unchanged_copy_up(root + b"/" + rel, view.find(rel)):
            os.rmdir(root + b"/" + rel)
            removed.append(rel)
    return tuple(os.fsdecode(rel) for rel in removed)


def _is_unchanged_copy_up(path: bytes, below: os.stat_result | None) -> bool:
    st = lstat_or_none(path)
    if st is None or below is None or not stat.S_ISDIR(st.st_mode) or os.listdir(path) or is_opaque(path):
        return False
    return (st.st_mode, st.st_uid, st.st_gid) == (below.st_mode, below.st_uid, below.st_gid)


def read_layer_entries(stream: IO[bytes]) -> list[LayerEntry]:
    """The entries of an uncompressed layer tar, in archive order."""
    entries = []
    try:
        with tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape") as archive:
            for member in archive:
                entries.append(
                    LayerEntry(
                        member.name,
                        _TYPE_NAMES.get(member.type, repr(member.type)),
                        member.mode,
                        member.uid,
                        member.gid,
                        member.size,
                        member.linkname,
                    )
                )
    except tarfile.TarError as exc:
        raise LayerError(f"malformed layer tar: {exc}") from exc
    return entries


_TYPE_NAMES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


class _LowerView:
    """Answers "what would the lower layers show at this path?" the way overlayfs does."""

    def __init__(self, lowers: Sequence[Path]) -> None:
        self._roots = tuple(os.fsencode(lower) for lower in lowers)
        self._unchanged: dict[bytes, bool] = {}

    def unchanged_tree(self, path: bytes, rel: bytes) -> bool:
        """Whether the upper dir ``path`` changes nothing: a copy-up with the mode and owner
        below, not opaque, holding only such dirs (BuildKit's differ skips these too)."""
        known = self._unchanged.get(rel)
        if known is None:
            below = self.find(rel)
            st = lstat_or_none(path)
            known = (
                st is not None and below is not None and stat.S_ISDIR(below.st_mode)
                and (st.st_mode, st.st_uid, st.st_gid) == (below.st_mode, below.st_uid, below.st_gid)
                and not is_opaque(path)
                and all(e.is_dir(follow_symlinks=False) and self.unchanged_tree(e.path, rel + b"/" + e.name)
                        for e in os.scandir(path))
            )
            self._unchanged[rel] = known
        return known

    def find(self, rel: bytes) -> os.stat_result | None:
        """The lstat of what the lowers show at ``rel`` (no symlink followed), or None."""
        parts = rel.split(b"/")
        for root in self._roots:
            found, final = _find_in_layer(root, parts)
            if found is not None or final:
                return found
        return None


def _find_in_layer(root: bytes, parts: list[bytes]) -> tuple[os.stat_result | None, bool]:
    """``(entry, final)``; ``final`` means layers further down cannot show this path."""
    path = root
    hides_below = False
    for i, part in enumerate(parts):
        path += b"/" + part
        st = lstat_or_none(path)
        if st is None:
            return None, hides_below
        if is_whiteout(st):
            return None, True
        if i == len(parts) - 1:
            return st, True
        if not stat.S_ISDIR(st.st_mode):
            return None, True
        hides_below = hides_below or is_opaque(path)
    return None, True


def _walk(writer: _TarWriter, directory: bytes, rel: bytes, lowers: _LowerView | None, hidden: bool) -> None:
    """Emit the children of ``directory``; ``hidden``: nothing of the lowers shows below it."""
    for name in sorted(os.listdir(directory)):
        path = directory + b"/" + name
        child = rel + name
        st = os.lstat(path)
        if lowers is not None and is_whiteout(st):
            if not hidden and lowers.find(child) is not None:
                writer.whiteout(child, st)
            continue
        if stat.S_ISSOCK(st.st_mode):
            continue  # sockets cannot travel in a tar
        if not hidden and lowers is not None and stat.S_ISDIR(st.st_mode) and lowers.unchanged_tree(path, child):
            continue  # dirs copied up and left as they were below (mount points' parents): no change
        writer.entry(path, child, st)
        if not stat.S_ISDIR(st.st_mode):
            continue
        below = None if hidden or lowers is None else lowers.find(child)
        lower_dir = below is not None and stat.S_ISDIR(below.st_mode)
        opaque = lowers is not None and is_opaque(path)
        if opaque and lower_dir:
            writer.opaque(child, st)
        _walk(writer, path, child + b"/", lowers, hidden or opaque or not lower_dir)


# Output is gathered into writes of about this size (headers and small files together), and
# file contents are read this much at a time: fewer, larger writes for the hash and compressor.
_COPY_BUFFER = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_END = tarfile.NUL * (2 * _BLOCK)  # two zero blocks end the archive


class _TarWriter:
    """Turns lstat results into tar entries; remembers inodes for hard links."""

    def __init__(self, out: Writable, clamp_mtime: int | None) -> None:
        self._out = out
        self._buffer = bytearray()
        self._offset = 0  # bytes of tar emitted so far, buffered or not
        self._clamp = clamp_mtime
        self._inodes: dict[tuple[int, int], bytes] = {}
        self._entries = self._whiteouts = self._bytes = 0

    def close(self) -> DiffStats:
        # as tarfile's "w" mode closes: two zero blocks, then zeros up to a whole record
        self._emit(_END)
        remainder = self._offset % tarfile.RECORDSIZE
        if remainder:
            self._emit(tarfile.NUL * (tarfile.RECORDSIZE - remainder))
        self._flush()
        return DiffStats(self._entries, self._whiteouts, self._bytes)

    def entry(self, path: bytes, rel: bytes, st: os.stat_result) -> None:
        xattrs = read_xattrs(path)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            self._regular(path, rel, st, xattrs)
            return
        linkname, devmajor, devminor = b"", 0, 0
        if kind == stat.S_IFDIR:
            kind_byte = tarfile.DIRTYPE
        elif kind == stat.S_IFLNK:
            kind_byte = tarfile.SYMTYPE
            linkname = os.readlink(path)
            self._bytes += st.st_size  # docker's layer size counts a symlink's target length too
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            kind_byte = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
            devmajor, devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif kind == stat.S_IFIFO:
            kind_byte = tarfile.FIFOTYPE
        else:
            kind_byte = tarfile.REGTYPE
        self._add(rel, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, self._mtime(st), kind_byte,
                  linkname=linkname, xattrs=xattrs, devmajor=devmajor, devminor=devminor)

    def whiteout(self, rel: bytes, st: os.stat_result) -> None:
        parent, _, name = rel.rpartition(b"/")
        marker = (parent + b"/" if parent else b"") + WHITEOUT_PREFIX.encode() + name
        self._marker(marker, st)

    def opaque(self, rel: bytes, st: os.stat_result) -> None:
        self._marker(rel + b"/" + OPAQUE_MARKER.encode(), st)

    def _marker(self, rel: bytes, st: os.stat_result) -> None:
        self._whiteouts += 1
        self._add(rel, 0, 0, 0, self._mtime(st), tarfile.REGTYPE)

    def _mtime(self, st: os.stat_result) -> int:
        mtime = int(st.st_mtime)
        return mtime if self._clamp is None else min(mtime, self._clamp)

    def _regular(self, path: bytes, rel: bytes, st: os.stat_result, xattrs: tuple[tuple[str, bytes], ...]) -> None:
        mode, mtime = stat.S_IMODE(st.st_mode), self._mtime(st)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self._inodes:
            self._add(rel, mode, st.st_uid, st.st_gid, mtime, tarfile.LNKTYPE, linkname=self._inodes[key],
                      xattrs=xattrs)
            return
        self._inodes[key] = rel
        size = st.st_size
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._add(rel, mode, st.st_uid, st.st_gid, mtime, tarfile.REGTYPE, size=size, xattrs=xattrs)
            left = size
            while left:
                chunk = os.read(fd, min(left, _COPY_BUFFER))
                if not chunk:
                    raise LayerError(f"{os.fsdecode(path)} shrank while it was being written to a layer")
                self._emit(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        if size % _BLOCK:
            self._emit(tarfile.NUL * (_BLOCK - size % _BLOCK))
        self._bytes += size

    def _add(self, rel: bytes, mode: int, uid: int, gid: int, mtime: int, kind: bytes, *, size: int = 0,
             linkname: bytes = b"", xattrs: tuple[tuple[str, bytes], ...] = (), devmajor: int = 0,
             devminor: int = 0) -> None:
        """The header(s) of one entry: packed directly when plain, else encoded by tarfile itself
        (as its ``addfile`` would); the bytes are the same (see :mod:`lamina.snapshot.tarheader`)."""
        self._entries += 1
        name = rel + b"/" if kind == tarfile.DIRTYPE else rel
        if not xattrs:
            block = plain_header(name, mode, uid, gid, size, mtime, kind, linkname, devmajor, devminor)
            if block is not None:
                self._emit(block)
                return
        info = tarfile.TarInfo(os.fsdecode(rel))
        info.mode, info.uid, info.gid, info.mtime, info.type, info.size = mode, uid, gid, mtime, kind, size
        info.linkname = os.fsdecode(linkname)
        info.uname = info.gname = ""
        info.devmajor, info.devminor = devmajor, devminor
        info.pax_headers = {f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape") for key, value in xattrs}
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _emit(self, data: bytes) -> None:
        self._offset += len(data)
        if len(data) >= _COPY_BUFFER:
            self._flush()
            self._out.write(data)
            return
        self._buffer += data
        if len(self._buffer) >= _COPY_BUFFER:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._out.write(bytes(self._buffer))
            self._buffer.clear()
