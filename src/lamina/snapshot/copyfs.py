"""A snapshotter for hosts without overlayfs: plain copies and a recorded baseline.

``prepare`` copies the lower snapshots, bottom-most first, into one plain
directory (honouring their whiteouts and opaque directories) and records what
every entry looked like. ``unmount`` compares the tree with that baseline and
writes the differences into ``upper`` in overlay format, exactly as overlayfs
would have (changed entries copied with their parents, deleted ones as 0:0
character devices, replaced directories opaque), so the rest of the pipeline
cannot tell the two apart. Slower than overlay, and the copy costs disk space.

Copies are real copies, never hard links: a step that appends to a file in
place would otherwise change the lower snapshot.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from lamina.model import model
from lamina.snapshot._fs import (
    OPAQUE_XATTR,
    apply_metadata,
    copy_node,
    is_opaque,
    is_whiteout,
    lstat_or_none,
    read_xattrs,
    remove_any,
)
from lamina.snapshot._workdir import new_workdir, stale_workdirs

_FS_IOC_GETVERSION = 0x80087601


@model
class _Ident:
    """What an entry looked like: any change of content, metadata or inode shows here."""

    kind: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    generation: int


def _generation(path: bytes) -> int:
    """The inode generation of a directory, so a reused inode number is not taken for the same dir."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        raw = fcntl.ioctl(fd, _FS_IOC_GETVERSION, b"\0" * 8)
        return int(struct.unpack("=I", raw[:4])[0])
    except OSError:
        return 0
    finally:
        os.close(fd)


def _ident(path: bytes, st: os.stat_result) -> _Ident:
    generation = _generation(path) if stat.S_ISDIR(st.st_mode) else 0
    return _Ident(
        stat.S_IFMT(st.st_mode),
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        generation,
    )


def apply_layer(layer: Path, root: Path) -> None:
    """Apply the overlay-format snapshot ``layer`` on top of the plain tree ``root``."""
    dirs: list[tuple[bytes, os.stat_result]] = []
    _apply_dir(os.fsencode(layer), os.fsencode(root), {}, dirs)
    for path, st in reversed(dirs):
        os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)


def _apply_dir(
    src: bytes, dst: bytes, links: dict[tuple[int, int], bytes], dirs: list[tuple[bytes, os.stat_result]]
) -> None:
    for name in sorted(os.listdir(src)):
        source, target = src + b"/" + name, dst + b"/" + name
        st = os.lstat(source)
        current = lstat_or_none(target)
        if is_whiteout(st):
            remove_any(target)
            continue
        if not stat.S_ISDIR(st.st_mode):
            if current is not None:
                remove_any(target)
            copy_node(source, target, st, links)
            continue
        if current is not None and (not stat.S_ISDIR(current.st_mode) or is_opaque(source)):
            remove_any(target)
            current = None
        if current is None:
            os.mkdir(target, 0o700)
        apply_metadata(target, st, read_xattrs(source))
        dirs.append((target, st))
        _apply_dir(source, target, links, dirs)


@model
class _Baseline:
    """Every entry of the merged tree as prepared, and each directory's children."""

    entries: dict[bytes, _Ident]
    children: dict[bytes, frozenset[bytes]]

    @classmethod
    def record(cls, root: bytes) -> _Baseline:
        baseline = cls({}, {})
        baseline._record_dir(root, b"")
        return baseline

    def _record_dir(self, root: bytes, rel: bytes) -> None:
        names = []
        for name in os.listdir(root + rel):
            child = rel + b"/" + name
            st = os.lstat(root + child)
            if stat.S_ISSOCK(st.st_mode):
                continue
            names.append(name)
            self.entries[child] = _ident(root + child, st)
            if stat.S_ISDIR(st.st_mode):
                self._record_dir(root, child)
        self.children[rel] = frozenset(names)


class _Differ:
    """Writes the difference between the baseline and the merged tree into ``upper``."""

    def __init__(self, merged: bytes, upper: bytes, baseline: _Baseline) -> None:
        self._merged, self._upper, self._base = merged, upper, baseline
        self._links: dict[tuple[int, int], bytes] = {}
        self._dirs: list[bytes] = []

    def run(self) -> None:
        self._walk(b"", fresh=False)
        for rel in reversed(self._dirs):  # deepest last created, so set times bottom-up
            st = os.lstat(self._merged + rel)
            os.utime(self._upper + rel, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _walk(self, rel: bytes, fresh: bool) -> None:
        """``fresh``: the directory is new or replaced, so nothing of the baseline is below it."""
        names = set()
        for name in sorted(os.listdir(self._merged + rel)):
            child = rel + b"/" + name
            st = os.lstat(self._merged + child)
            if stat.S_ISSOCK(st.st_mode):
                continue
            names.add(name)
            before = None if fresh else self._base.entries.get(child)
            now = _ident(self._merged + child, st)
            if stat.S_ISDIR(st.st_mode):
                self._dir(child, before, now)
            elif before != now:
                self._ensure_dir(rel)
                copy_node(self._merged + child, self._upper + child, st, self._links)
        if not fresh:
            for gone in sorted(self._base.children.get(rel, frozenset()) - names):
                self._ensure_dir(rel)
                os.mknod(self._upper + rel + b"/" + gone, stat.S_IFCHR, os.makedev(0, 0))

    def _dir(self, rel: bytes, before: _Ident | None, now: _Ident) -> None:
        same_dir = (
            before is not None
            and before.kind == stat.S_IFDIR
            and (before.inode, before.generation) == (now.inode, now.generation)
        )
        if before != now:
            self._ensure_dir(rel)
            if before is not None and before.kind == stat.S_IFDIR and not same_dir:
                os.setxattr(self._upper + rel, OPAQUE_XATTR, b"y")  # removed and made anew
        self._walk(rel, fresh=not same_dir)

    def _ensure_dir(self, rel: bytes) -> None:
        """Create ``rel`` and its parents in ``upper`` as copies of the merged dirs (a copy-up)."""
        if not rel or lstat_or_none(self._upper + rel) is not None:
            return
        self._ensure_dir(rel.rpartition(b"/")[0])
        os.mkdir(self._upper + rel, 0o700)
        st = os.lstat(self._merged + rel)
        apply_metadata(self._upper + rel, st, read_xattrs(self._merged + rel))
        self._dirs.append(rel)


class CopySnapshotter:
    """Copy-based stand-in for overlayfs: works on any filesystem, as any user able to copy."""

    name = "native"

    def prepare(self, lowers: Sequence[Path], work_root: Path) -> CopyMount:
        """Build the merged tree of ``lowers`` (top-most first) inside ``work_root``."""
        base, lock_fd = new_workdir(work_root)
        try:
            merged, upper = base / "merged", base / "upper"
            for path in (merged, upper):
                path.mkdir()
                os.chmod(path, 0o755)
            for lower in reversed(lowers):
                apply_layer(lower, merged)
            baseline = _Baseline.record(os.fsencode(merged))
        except BaseException:
            os.close(lock_fd)
            shutil.rmtree(base, ignore_errors=True)
            raise
        return CopyMount(base, merged, upper, baseline, lock_fd)

    def cleanup_stale(self, work_root: Path) -> int:
        """Remove what dead processes left in ``work_root``; return how many."""
        removed = 0
        for base in stale_workdirs(work_root):
            try:
                shutil.rmtree(base)
            except OSError:  # something still writes there (a dead build's container): next time
                continue
            removed += 1
        return removed


class CopyMount:
    """One copied tree. As a context manager: commits on success, discards on error."""

    def __init__(self, base: Path, merged: Path, upper: Path, baseline: _Baseline, lock_fd: int) -> None:
        self._base = base
        self._merged = merged
        self._baseline: _Baseline | None = baseline
        self._lock_fd: int | None = lock_fd
        self.upper = upper

    @property
    def root(self) -> Path:
        return self._merged

    def unmount(self) -> None:
        """Compute ``upper`` from the changes made in ``root`` (once; later calls do nothing)."""
        if self._baseline is None:
            return
        _Differ(os.fsencode(self._merged), os.fsencode(self.upper), self._baseline).run()
        self._baseline = None

    def discard(self) -> None:
        """Remove the tree and whatever of ``upper`` was not moved away."""
        self._baseline = None
        shutil.rmtree(self._base, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> CopyMount:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.unmount()
        else:
            self.discard()
