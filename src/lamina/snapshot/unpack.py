"""Unpacking a layer tar into an overlayfs-format snapshot directory, safely.

A layer is unpacked once, into its own directory, and then serves read-only as
an overlay lower dir. OCI whiteouts become overlay's: ``.wh.NAME`` a 0:0
character device ``NAME``, ``.wh..wh..opq`` the xattr ``trusted.overlay.opaque=y``
on its directory.

Layers come from registries, so every entry is hostile until proven
otherwise. Each one is created relative to a directory file descriptor reached
by walking its parents with ``O_NOFOLLOW | O_DIRECTORY``: an entry below a
symlink (or a file) is rejected rather than followed, ``..`` is rejected,
absolute names become relative, and hard links may only name a regular file
created earlier in the same layer. Nothing outside ``dest`` is touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Protocol, cast

from lamina.errors import DigestMismatch, LayerError
from lamina.model import model
from lamina.oci.digest import Digest
from lamina.snapshot._fs import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_Parts = tuple[str, ...]
# Not in typeshed; tarfile's own names for "garbage" and "cut short" headers.
_BAD_HEADER: tuple[type[Exception], ...] = (
    vars(tarfile)["TruncatedHeaderError"],
    vars(tarfile)["InvalidHeaderError"],
)


class Readable(Protocol):
    """The one method unpacking needs from a stream."""

    def read(self, size: int = -1, /) -> bytes: ...


@model
class UnpackStats:
    """What one unpack wrote: tar entries read, regular files, their bytes, whiteouts."""

    entries: int
    files: int
    content_bytes: int
    whiteouts: int


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile quietly ends the archive at a bad or truncated header; a layer must not."""

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> _StrictTarInfo:
        try:
            return super().fromtarfile(archive)
        except _BAD_HEADER as exc:
            raise LayerError(f"malformed layer tar at byte {archive.offset}: {exc}") from exc


def unpack_layer(tar_stream: Readable, dest: Path, *, max_bytes: int | None = None) -> UnpackStats:
    """Unpack the uncompressed tar ``tar_stream`` into the empty directory ``dest``.

    Reads the stream once, front to back (the caller closes it). Raises
    :class:`LayerError` for a malformed, truncated, hostile or oversized layer
    (``max_bytes`` bounds the total size of file contents); ``dest`` is then
    left half-written for the caller to remove.
    """
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        unpacker = _Unpacker(root_fd, max_bytes)
        try:
            with tarfile.open(
                fileobj=cast(IO[bytes], tar_stream),
                mode="r|",
                tarinfo=_StrictTarInfo,
                errors="surrogateescape",
            ) as archive:
                for member in archive:
                    unpacker.add(archive, member)
        except (tarfile.TarError, EOFError) as exc:
            raise LayerError(f"malformed layer tar: {exc}") from exc
        finally:
            unpacker.close()
        unpacker.finish()
        return unpacker.stats()
    finally:
        os.close(root_fd)


def unpack_to_snapshot(
    open_stream: Callable[[], IO[bytes]],
    snapshots_dir: Path,
    diff_id: Digest,
    *,
    max_bytes: int | None = None,
) -> Path:
    """Return ``snapshots_dir/<diff_id hex>``, unpacking the layer first if it is missing.

    ``open_stream`` is called only when needed and must return the
    *uncompressed* tar; it is closed here. The tar is checked against
    ``diff_id`` (:class:`DigestMismatch` otherwise). The layer is unpacked into
    a temp dir beside the target and renamed into place, so a snapshot is
    either complete or absent; when two processes race, the loser discards its
    copy.
    """
    target = snapshots_dir / diff_id.hex
    if target.is_dir():
        return target
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{diff_id.hex[:12]}-", dir=snapshots_dir))
    try:
        with contextlib.closing(open_stream()) as raw:
            hashing = _HashingReader(raw, diff_id)
            unpack_layer(hashing, tmp, max_bytes=max_bytes)
            hashing.verify()
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not target.is_dir():
                raise
            shutil.rmtree(tmp)  # another process won the race with the same content
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class _HashingReader:
    """Hashes what tarfile reads, so the snapshot is known to match its diff_id."""

    def __init__(self, raw: IO[bytes], expected: Digest) -> None:
        self._raw = raw
        self._expected = expected
        self._hasher = hashlib.new(expected.algorithm)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hasher.update(data)
        return data

    def verify(self) -> None:
        while self.read(_CHUNK):  # the padding tarfile did not need
            pass
        actual = Digest.from_hasher(self._hasher)
        if actual != self._expected:
            raise DigestMismatch(f"layer {self._expected}: uncompressed content hashes to {actual}")


def _components(name: str) -> _Parts:
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerError(f"layer entry {name!r} escapes the layer root")
    return parts


def _lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class _Unpacker:
    """The state of one unpack: what this layer created, and directory times to set last."""

    def __init__(self, root_fd: int, max_bytes: int | None) -> None:
        self._root_fd = root_fd
        self._max_bytes = max_bytes
        self._created: dict[_Parts, bool] = {}  # path -> is a regular file
        self._dir_times: dict[_Parts, float] = {}
        self._entries = self._files = self._bytes = self._whiteouts = 0
        # The last entry's parent directory, kept open: a tar lists siblings together, and walking
        # every parent again per entry was most of an unpack's system calls. Only entries in this
        # directory are created or removed while it is kept, so it cannot be replaced meanwhile.
        self._parent: tuple[_Parts, int] | None = None

    def stats(self) -> UnpackStats:
        return UnpackStats(self._entries, self._files, self._bytes, self._whiteouts)

    def add(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self._entries += 1
        path = _components(member.name)
        if not path:
            if not member.isdir():
                raise LayerError(f"layer entry {member.name!r} replaces the root with a non-directory")
            return  # the root's metadata belongs to the snapshot, not the layer
        parent_fd = self._parent_fd(path[:-1], member.name)
        try:
            if path[-1].startswith(WHITEOUT_PREFIX):
                self._whiteout(parent_fd, path, member.name)
            else:
                self._create(parent_fd, path, archive, member)
        except OSError as exc:
            raise LayerError(f"unpacking layer entry {member.name!r}: {exc}") from exc

    def _parent_fd(self, parts: _Parts, what: str) -> int:
        """The directory ``parts`` (created if missing), as a descriptor this unpacker closes."""
        if self._parent is not None and self._parent[0] == parts:
            return self._parent[1]
        fd = self._open_dir(parts, create=True, what=what)
        self.close()
        self._parent = (parts, fd)
        return fd

    def close(self) -> None:
        """Close the kept parent directory (idempotent)."""
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def finish(self) -> None:
        """Set directory mtimes, deepest first: creating their contents changed them."""
        self.close()
        for path, mtime in sorted(self._dir_times.items(), key=lambda item: -len(item[0])):
            parent_fd = self._open_dir(path[:-1], create=False, what="/".join(path))
            try:
                ns = int(mtime * 1_000_000_000)
                os.utime(path[-1], ns=(ns, ns), dir_fd=parent_fd, follow_symlinks=False)
            finally:
                os.close(parent_fd)

    def _open_dir(self, parts: _Parts, *, create: bool, what: str) -> int:
        """A descriptor of directory ``parts`` under the root, never through a symlink."""
        fd = os.dup(self._root_fd)
        try:
            for part in parts:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)  # tars may omit parent directories
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    os.fchmod(child, 0o755)  # whatever the umask
                os.close(fd)
                fd = child
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise LayerError(f"layer entry {what!r}: a parent is a symlink or not a directory") from exc
            raise LayerError(f"layer entry {what!r}: {exc}") from exc
        return fd

    def _whiteout(self, parent_fd: int, path: _Parts, name: str) -> None:
        base = path[-1]
        if base == OPAQUE_MARKER:
            os.setxattr(parent_fd, OPAQUE_XATTR, b"y")
            self._whiteouts += 1
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk and friends), not content
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise LayerError(f"layer entry {name!r}: whiteout names no file")
        if _lstat_at(hidden, parent_fd) is not None:
            return  # a whiteout hides lower layers only, never this layer's own entry
        os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
        self._created[path[:-1] + (hidden,)] = False
        self._whiteouts += 1

    def _create(
        self, parent_fd: int, path: _Parts, archive: tarfile.TarFile, member: tarfile.TarInfo
    ) -> None:
        name = path[-1]
        link_target = self._link_target(path, member) if member.islnk() else None
        existing = _lstat_at(name, parent_fd)
        merge_dir = existing is not None and member.isdir() and stat.S_ISDIR(existing.st_mode)
        if existing is not None and not merge_dir:
            self._remove(parent_fd, path, existing)
        if member.isreg():
            self._file(parent_fd, name, archive, member)
        elif member.isdir():
            if not merge_dir:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent_fd)
        elif link_target is not None:
            self._hardlink(parent_fd, name, link_target)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent_fd)
        elif member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent_fd)
        else:
            raise LayerError(f"layer entry {member.name!r}: unsupported type {member.type!r}")
        self._created[path] = member.isreg() or member.islnk()
        if not member.islnk():  # a hard link shares its target's inode and metadata
            self._metadata(parent_fd, path, member)

    def _link_target(self, path: _Parts, member: tarfile.TarInfo) -> _Parts:
        target = _components(member.linkname)
        if target == path or not self._created.get(target, False):
            raise LayerError(
                f"hard link {member.name!r} -> {member.linkname!r}: "
                "target is not a regular file earlier in this layer"
            )
        return target

    def _hardlink(self, parent_fd: int, name: str, target: _Parts) -> None:
        target_fd = self._open_dir(target[:-1], create=False, what="/".join(target))
        try:
            os.link(target[-1], name, src_dir_fd=target_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(target_fd)

    def _remove(self, parent_fd: int, path: _Parts, existing: os.stat_result) -> None:
        """A later entry replaces an earlier one; forget what was below it."""
        if stat.S_ISDIR(existing.st_mode):
            shutil.rmtree(path[-1], dir_fd=parent_fd)
        else:
            os.unlink(path[-1], dir_fd=parent_fd)
        depth = len(path)
        for table in (self._created, self._dir_times):
            for key in [k for k in table if k[:depth] == path]:
                del table[key]

    def _file(self, parent_fd: int, name: str, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if self._max_bytes is not None and self._bytes + member.size > self._max_bytes:
            raise LayerError(f"layer too large: file contents exceed {self._max_bytes} bytes")
        source = archive.extractfile(member)
        assert source is not None
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent_fd)
        with os.fdopen(fd, "wb") as out:
            remaining = member.size
            while remaining > 0:
                chunk = source.read(min(_CHUNK, remaining))
                if not chunk:
                    raise LayerError(f"layer entry {member.name!r}: unexpected end of data")
                out.write(chunk)
                remaining -= len(chunk)
        self._bytes += member.size
        self._files += 1

    def _metadata(self, parent_fd: int, path: _Parts, member: tarfile.TarInfo) -> None:
        name = path[-1]
        try:
            os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        except PermissionError:
            if os.geteuid() == 0:
                raise
        if not member.issym():  # chmod after chown, which clears setuid/setgid
            os.chmod(name, member.mode & 0o7777, dir_fd=parent_fd)  # our own fresh entry, not a symlink
        _apply_pax_xattrs(parent_fd, name, member.pax_headers)
        if member.isdir():
            self._dir_times[path] = member.mtime
        else:
            ns = int(member.mtime * 1_000_000_000)
            os.utime(name, ns=(ns, ns), dir_fd=parent_fd, follow_symlinks=False)


def _apply_pax_xattrs(parent_fd: int, name: str, headers: Mapping[str, str]) -> None:
    """``SCHILY.xattr.*`` records, except overlay's own (a layer must not forge whiteouts)."""
    for key, value in sorted(headers.items()):
        if not key.startswith("SCHILY.xattr."):
            continue
        attr = key[len("SCHILY.xattr.") :]
        if attr.startswith("trusted.overlay."):
            continue
        raw = value.encode("utf-8", "surrogateescape")  # tarfile decoded binary values this way
        # /proc/self/fd/N names our pinned parent; the last component is not followed.
        os.setxattr(f"/proc/self/fd/{parent_fd}/{name}", attr, raw, follow_symlinks=False)
