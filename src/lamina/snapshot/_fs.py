"""Small filesystem helpers shared by the snapshotters and the differ.

Paths here are ``bytes`` so that any file name the kernel accepts survives a
round trip; callers convert at their edges. Nothing here follows a symlink in
the last path component.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat

from lamina.snapshot.filecopy import copy_fd

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Overlay's own bookkeeping never leaves the snapshot; SELinux labels are the
# host's, not the image's (docker drops them too).
_SKIPPED_XATTR_PREFIXES = ("trusted.overlay.", "security.selinux")


def lstat_or_none(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def is_whiteout(st: os.stat_result) -> bool:
    """Overlay's deletion marker: a character device with device number 0:0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: bytes) -> bool:
    """Whether overlayfs treats the directory ``path`` as hiding all lower content."""
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise


def keep_xattr(name: str) -> bool:
    return not name.startswith(_SKIPPED_XATTR_PREFIXES)


def read_xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    """The xattrs worth keeping in an image, sorted by name."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    found = []
    for name in sorted(n for n in names if keep_xattr(n)):
        with contextlib.suppress(FileNotFoundError, OSError):
            found.append((name, os.getxattr(path, name, follow_symlinks=False)))
    return tuple(found)


def set_xattrs(path: bytes, wanted: tuple[tuple[str, bytes], ...]) -> None:
    """Make the kept xattrs of ``path`` exactly ``wanted``."""
    current = {name for name, _ in read_xattrs(path)}
    for name in current - {name for name, _ in wanted}:
        os.removexattr(path, name, follow_symlinks=False)
    for name, value in wanted:
        os.setxattr(path, name, value, follow_symlinks=False)


def apply_metadata(path: bytes, st: os.stat_result, xattrs: tuple[tuple[str, bytes], ...]) -> None:
    """Owner, mode, xattrs and times of ``st`` onto ``path`` (chmod after chown: chown drops setuid)."""
    os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    set_xattrs(path, xattrs)
    os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_node(src: bytes, dst: bytes, st: os.stat_result, links: dict[tuple[int, int], bytes]) -> bool:
    """Recreate the non-directory ``src`` at ``dst`` (which must not exist), metadata included.

    Regular files with several links are linked to the first copy recorded in
    ``links`` (keyed by the source's device and inode). Returns False for a
    socket, which is skipped.
    """
    kind = stat.S_IFMT(st.st_mode)
    key = (st.st_dev, st.st_ino)
    if kind == stat.S_IFREG and st.st_nlink > 1 and key in links:
        os.link(links[key], dst, follow_symlinks=False)
        return True
    if kind == stat.S_IFREG:
        _copy_content(src, dst)
        links[key] = dst
    elif kind == stat.S_IFLNK:
        os.symlink(os.readlink(src), dst)
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        os.mknod(dst, kind | 0o600, st.st_rdev)
    elif kind == stat.S_IFIFO:
        os.mkfifo(dst, 0o600)
    else:
        return False
    apply_metadata(dst, st, read_xattrs(src))
    return True


def _copy_content(src: bytes, dst: bytes) -> None:
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            copy_fd(fd_in, fd_out)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def remove_any(path: bytes) -> None:
    """Remove a file or a whole directory tree (never following symlinks)."""
    st = lstat_or_none(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
