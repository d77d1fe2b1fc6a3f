"""Whether two upper dirs made over the same lowers can be stacked in either order.

Used by the speculative COPY (:mod:`lamina.build.speculate`): a layer made over
the lowers is the one it would have been over ``lowers + below`` when ``below``
(another step's upper dir) changed nothing it wrote or resolved. An upper dir
holds every path its step created, changed or deleted, plus the parents of those,
copied up as they were; such a parent, a directory the same in both (type, mode,
owner, kept xattrs, not opaque), is passed through and its children compared.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lamina.snapshot._fs import is_opaque, lstat_or_none, read_xattrs


def overlaps(below: Path, layer: Path, dest: str) -> bool:
    """Whether ``below`` changed a path of ``layer``, or the path ``dest`` (absolute, as the
    step wrote it) or one of its parents: a symlink made there, a directory replaced."""
    low, top = os.fsencode(below), os.fsencode(layer)
    rel = b""
    for part in os.fsencode(dest).split(b"/"):
        if part:
            rel += b"/" + part
            if lstat_or_none(low + rel) is not None and not _same_dir(low + rel, top + rel):
                return True
    return _shared(low, top)


def symlink_on_path(root: Path, dest: str) -> bool:
    """Whether ``dest`` (absolute) or a parent of it is a symlink in ``root``: where the step
    wrote then depends on paths neither upper dir holds."""
    path = os.fsencode(root)
    for part in os.fsencode(dest).split(b"/"):
        if part:
            path += b"/" + part
            info = lstat_or_none(path)
            if info is None:
                return False  # made by the step, as a directory
            if stat.S_ISLNK(info.st_mode):
                return True
    return False


def _shared(below: bytes, layer: bytes) -> bool:
    """A path changed in both: one of ``layer``'s entries that ``below`` holds too and that is not
    a passed-through directory in both (then its children are compared)."""
    for name in os.listdir(layer):
        other, path = below + b"/" + name, layer + b"/" + name
        if lstat_or_none(other) is None:
            continue  # nothing below it changed either: ``below`` holds the parents of its changes
        if not _same_dir(other, path) or _shared(other, path):
            return True
    return False


def _same_dir(a: bytes, b: bytes) -> bool:
    sa, sb = lstat_or_none(a), lstat_or_none(b)
    return (sa is not None and sb is not None and stat.S_ISDIR(sa.st_mode) and stat.S_ISDIR(sb.st_mode)
            and (sa.st_mode, sa.st_uid, sa.st_gid) == (sb.st_mode, sb.st_uid, sb.st_gid)
            and not is_opaque(a) and not is_opaque(b) and read_xattrs(a) == read_xattrs(b))
