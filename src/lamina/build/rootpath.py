"""Resolve paths inside a root directory as if the process were chrooted there.

An image's root filesystem is an ordinary directory on the host, and its
symlinks were written for the image: ``/etc/alternatives/x -> /usr/bin/y``
means ``<root>/usr/bin/y``, never the host's ``/usr/bin/y``.  Writing through
such a link naively would let a hostile image (or build context) redirect a
write anywhere on the host.  :func:`resolve_in_root` follows links the way the
kernel would inside a chroot: ``..`` stops at the root and absolute targets are
re-rooted, so the result always lies under ``root``.

:func:`clean` is Go's ``path.Clean``, the normalisation Docker applies to
every path it is given (unlike :func:`os.path.normpath`, a leading ``//``
collapses and ``..`` at the root disappears).
"""

from __future__ import annotations

import os
import stat
from collections import deque
from pathlib import Path

from lamina.errors import BuildError

MAX_SYMLINKS = 40
"""Links followed in one resolution before giving up (Linux's own limit, ELOOP)."""


def clean(path: str) -> str:
    """Return the shortest path equivalent to ``path`` by lexical processing (Go ``path.Clean``)."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def resolve_in_root(root: Path, path: str, *, follow_final: bool, seen: set[str] | None = None) -> Path:
    """Return the host path that ``path`` (an in-image path) names under ``root``.

    Every symlink met on the way is followed inside ``root``; the last
    component is followed only when ``follow_final`` is true (pass false to
    act on a link itself: replace it, lchown it).  Components that do not
    exist are kept as they are, so the result may name a path to be created.
    The result never leaves ``root``.  Raises :class:`BuildError` after
    :data:`MAX_SYMLINKS` links (a loop).  Reads the filesystem (lstat,
    readlink) but never changes it; ``seen``, when given, gets every path it looked at.
    """
    pending = deque(path.split("/"))
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        is_final = not any(p not in ("", ".") for p in pending)
        candidate = root.joinpath(*resolved, part)
        if is_final and not follow_final:
            resolved.append(part)
            break
        if seen is not None:
            seen.add(str(candidate))
        try:
            info = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if not stat.S_ISLNK(info.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise BuildError(f"resolving {path}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved.clear()
        pending.extendleft(reversed(target.split("/")))
    return root.joinpath(*resolved)


__all__ = ["MAX_SYMLINKS", "clean", "resolve_in_root"]
