"""Sources of COPY/ADD: the build context (or a stage's root) and what a source pattern selects.

A :class:`SourceRoot` is a directory tree seen the way BuildKit sees it after
the transfer: files ignored by ``.dockerignore`` simply do not exist.
:func:`select` turns the source arguments of one instruction into
:class:`Selected` values, each a snapshot of the entries one source will
copy; :func:`checksum` reduces them to the content checksum used in cache
keys, and ``copy.copy_into`` writes them.  Selection reads the filesystem
(lstat, readdir, readlink) but never file contents; :func:`checksum` reads
contents unless the stat cache already knows them.

Docker's rules, as BuildKit's Dockerfile frontend applies them:

* a source is joined to ``/`` and cleaned, so ``..`` stops at the root
  (``COPY ../x`` looks for ``/x`` in the context);
* a component with ``*``, ``?`` or ``[`` starts a wildcard; matches are found
  below the literal prefix (which must exist) with Go ``filepath.Match``, a
  matching directory is taken whole; a wildcard that matches nothing is
  *not* an error (BuildKit's AllowEmptyWildcard; 046 relies on it), while a
  literal path that does not exist is (``"/x" not found``);
* the source path itself is followed if it is a symlink (BuildKit's
  FollowSymlinks), but inside the root: a link to ``/etc/passwd`` means the
  context's own ``etc/passwd``; links *inside* a copied directory are copied
  as links, never followed;
* owners of context files do not matter (BuildKit's file transfer maps them to
  0:0); a stage's root keeps them (``COPY --from`` preserves ownership).

``--exclude`` and ``--parents`` (BuildKit's exclude and include patterns, with
``.dockerignore``'s syntax, ``**`` included) are matched against paths relative
to each source: an excluded entry is dropped (a directory with it all, unless
a ``!`` exception re-includes something below); with ``--parents`` a source
becomes its pivot directory (the root, or what precedes ``/./``) narrowed to
the matching entries and their parent directories.  A file that a wildcard
matched is itself excluded when its path below the wildcard's literal prefix
matches, so ``--exclude=*.txt hom*`` skips ``home.txt`` as the Dockerfile
reference shows (a matched directory is kept: its contents are filtered).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import field
from pathlib import Path
from typing import Literal, Protocol

from lamina.build.dockerignore import (
    IgnoreMatcher,
    IgnorePattern,
    compile_pattern,
    go_glob_regex,
    has_wildcards,
)
from lamina.build.rootpath import clean, resolve_in_root
from lamina.errors import BuildError, ContextError
from lamina.model import model

Kind = Literal["file", "dir", "symlink", "fifo", "char", "block", "socket"]

_KINDS: tuple[tuple[int, Kind], ...] = (
    (stat.S_IFREG, "file"),
    (stat.S_IFDIR, "dir"),
    (stat.S_IFLNK, "symlink"),
    (stat.S_IFIFO, "fifo"),
    (stat.S_IFCHR, "char"),
    (stat.S_IFBLK, "block"),
    (stat.S_IFSOCK, "socket"),
)


@model
class SourceRoot:
    """A tree COPY reads from: the build context (with its ignore rules) or a stage/image root."""

    path: Path
    ignore: IgnoreMatcher | None = None
    keep_owners: bool = False
    """True for a stage or image root, whose owners COPY keeps; false for the build context."""
    seen: set[str] | None = field(default=None, compare=False, repr=False)
    """When a set: every host path selection looks at is added (a build's memo watches them)."""

    @classmethod
    def context(cls, path: Path, ignore: IgnoreMatcher | None = None, seen: set[str] | None = None) -> SourceRoot:
        return cls(path, ignore, keep_owners=False, seen=seen)

    @classmethod
    def stage(cls, path: Path) -> SourceRoot:
        return cls(path, None, keep_owners=True)

    def ignored(self, relpath: str) -> bool:
        return self.ignore is not None and self.ignore.matches(relpath)

    def skippable(self, relpath: str) -> bool:
        return self.ignore is not None and self.ignore.can_skip_dir(relpath)


@model
class Entry:
    """One filesystem object of a source, as lstat saw it at selection time."""

    relpath: str
    """Path below the source, ``/``-separated; ``""`` for the source itself."""
    kind: Kind
    mode: int
    """Permission bits including setuid, setgid and sticky (``S_IMODE``)."""
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int
    inode: tuple[int, int]
    """``(st_dev, st_ino)``: equal values within one source are hard links."""
    nlink: int
    rdev: int = 0
    link_target: str = ""
    ctime_ns: int = 0
    """Changes with every write, chmod or rename and cannot be set back: the stat cache's stamp
    (an edit that restores size and mtime still misses)."""


@model
class Selected:
    """One source of a COPY after wildcard expansion, with the entries it will copy."""

    relpath: str
    """The source as named (root-relative, not followed); ``""`` for the root itself."""
    real: str
    """Where its entries live (root-relative), after following a symlinked source."""
    entries: tuple[Entry, ...]
    """The source first, then its contents: sorted, parents before children."""

    @property
    def name(self) -> str:
        """The name the source takes when copied into a directory."""
        return self.relpath.rsplit("/", 1)[-1]

    @property
    def is_dir(self) -> bool:
        return self.entries[0].kind == "dir"


class StatCache(Protocol):
    """Remembers file digests by stat data, so an unchanged file is not read again."""

    def get(self, path: str, size: int, ctime_ns: int, ino: int, mode: int) -> str | None: ...

    def put(self, path: str, size: int, ctime_ns: int, ino: int, mode: int, digest: str) -> None: ...


def _entry(path: Path | str, relpath: str, info: os.stat_result | None = None) -> Entry:
    """``path``'s entry from its lstat (``info``, when the caller has it already)."""
    if info is None:
        info = os.lstat(path)
    fmt = stat.S_IFMT(info.st_mode)
    kind = next((k for f, k in _KINDS if f == fmt), None)
    if kind is None:
        raise ContextError(f"{relpath or path}: unsupported file type")
    return Entry(
        relpath=relpath,
        kind=kind,
        mode=stat.S_IMODE(info.st_mode),
        uid=info.st_uid,
        gid=info.st_gid,
        size=info.st_size if kind == "file" else 0,
        mtime_ns=info.st_mtime_ns,
        atime_ns=info.st_atime_ns,
        inode=(info.st_dev, info.st_ino),
        nlink=info.st_nlink,
        rdev=info.st_rdev if kind in ("char", "block") else 0,
        link_target=os.readlink(path) if kind == "symlink" else "",
        ctime_ns=info.st_ctime_ns,
    )


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _relative(root: SourceRoot, host: Path) -> str:
    """``host`` (under the root) as a root-relative path, ``""`` for the root itself."""
    rel = host.relative_to(root.path).as_posix()
    return "" if rel == "." else rel


def _children(root: SourceRoot, real: str) -> list[str]:
    """Names in the directory ``real``, in byte order (what Go's walk gives, on any machine)."""
    if root.seen is not None:
        root.seen.add(_host(root, real))
    return sorted(os.listdir(root.path / real) if real else os.listdir(root.path), key=os.fsencode)


def _byte_order(entry: os.DirEntry[str]) -> bytes:
    return entry.name.encode("utf-8", "surrogateescape")  # os.fsencode, without its checks


def _host(root: SourceRoot, *parts: str) -> str:
    """The host path of root-relative ``parts``, spelled as ``str(root.path / ...)`` spells it.

    Plain strings: a context of thousands of files is walked and hashed on every build,
    and pathlib's objects cost more than the system calls (the stat cache's keys stay the same).
    """
    base, rel = str(root.path), _join(*parts)
    if not rel:
        return base
    if base == ".":
        return rel
    return base + rel if base.endswith("/") else base + "/" + rel


def _scan(root: SourceRoot, real: str, below: str) -> list[Entry] | None:
    """Entries of ``real/below`` and everything under it that the ignore rules let through.

    ``None`` when nothing at all is visible (an ignored file, or an ignored
    directory that no exception re-includes anything from).
    """
    host = _host(root, real, below)
    return _scan_entry(root, real, below, host, _entry(host, below))


def _scan_entry(root: SourceRoot, real: str, below: str, host: str, entry: Entry) -> list[Entry] | None:
    """:func:`_scan` for an entry already made; children come from one ``scandir`` each."""
    path = _join(real, below)
    if root.seen is not None:
        root.seen.add(host)
    if entry.kind == "fifo" and not root.keep_owners:
        return None  # BuildKit's context transfer leaves named pipes out (Docker 20.10)
    ignored = root.ignore is not None and root.ignored(path)
    if entry.kind != "dir":
        return None if ignored else [entry]
    if ignored and root.skippable(path):
        return None
    found = [entry]
    with os.scandir(host) as listing:
        children = sorted(listing, key=_byte_order)
    prefix = below + "/" if below else ""
    for child in children:
        rel = prefix + child.name
        found.extend(_scan_entry(root, real, rel, child.path,
                                 _entry(child.path, rel, child.stat(follow_symlinks=False))) or ())
    # An ignored directory still appears as the parent of what an exception re-includes.
    return None if ignored and len(found) == 1 else found


def _not_found(shown: str, hint: str = "") -> ContextError:
    return ContextError(f'"{shown}" not found{hint}: not found')


def _follow(root: SourceRoot, relpath: str) -> Selected | None:
    """Select the single path ``relpath``, following it if it is a symlink; None if invisible."""
    try:
        if relpath and root.ignored(relpath):
            # The name itself was never transferred, unless it is a directory
            # that an exception re-includes something from.
            named = resolve_in_root(root.path, "/" + relpath, follow_final=False, seen=root.seen)
            if root.seen is not None:
                root.seen.add(str(named))
            info = os.lstat(named)
            if not stat.S_ISDIR(info.st_mode) or root.skippable(relpath):
                return None
        real = _relative(root, resolve_in_root(root.path, "/" + relpath, follow_final=True, seen=root.seen))
        entries = _scan(root, real, "")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Selected(relpath, real, tuple(entries)) if entries else None


def _wildcard_matches(root: SourceRoot, base: str, regex: re.Pattern[str], depth: int) -> Iterator[str]:
    """Visible paths below ``base`` (root-relative, already followed) whose base-relative path matches."""

    def walk(below: str, level: int) -> Iterator[str]:
        for name in _children(root, _join(base, below)):
            rel = _join(below, name)
            path = _join(base, rel)
            mode = os.lstat(root.path / path).st_mode
            is_dir = stat.S_ISDIR(mode)
            if root.ignored(path) and (not is_dir or root.skippable(path)):
                continue
            if stat.S_ISFIFO(mode) and not root.keep_owners:
                continue  # never transferred, as in _scan_entry
            if regex.match(rel):
                yield path
            elif is_dir and level + 1 < depth:
                yield from walk(rel, level + 1)

    yield from walk("", 0)


def _expand(root: SourceRoot, pattern: str) -> list[tuple[str, str | None]]:
    """Root-relative paths a source argument names, each with its path below the wildcard's base.

    The second item is None for a literal source (BuildKit never excludes
    a source it was given by name).
    """
    parts = clean("/" + pattern).strip("/").split("/")
    first = next((i for i, part in enumerate(parts) if has_wildcards(part)), None)
    if first is None:
        return [(_join(*parts), None)]
    literal, rest = _join(*parts[:first]), "/".join(parts[first:])
    try:
        regex = re.compile(go_glob_regex(rest), re.DOTALL)
    except ValueError as exc:
        raise ContextError(f"COPY source {pattern!r}: {exc}") from exc
    base = resolve_in_root(root.path, "/" + literal, follow_final=True, seen=root.seen)
    if not base.is_dir() or (literal and root.ignored(literal) and root.skippable(literal)):
        raise _not_found("/" + literal)
    base_real = _relative(root, base)
    return [(path, path[len(base_real):].lstrip("/")) for path in _wildcard_matches(root, base_real, regex,
                                                                                     len(parts) - first)]


def _matcher(patterns: Sequence[str]) -> IgnoreMatcher | None:
    try:
        return IgnoreMatcher.from_patterns(patterns) if patterns else None
    except ContextError as exc:
        raise ContextError(f"--exclude: {str(exc).removeprefix('.dockerignore: ')}") from None


def _without_excluded(found: Selected, exclude: IgnoreMatcher) -> Selected:
    """``found`` minus what ``exclude`` matches; a directory stays as the parent of what remains."""
    kept = [not e.relpath or not exclude.matches(e.relpath) for e in found.entries]
    parents = {p for e, keep in zip(found.entries, kept, strict=True) if keep for p in _ancestors(e.relpath)}
    entries = tuple(e for e, keep in zip(found.entries, kept, strict=True)
                    if keep or (e.kind == "dir" and e.relpath in parents))
    return Selected(found.relpath, found.real, entries)


def _ancestors(relpath: str) -> Iterator[str]:
    while "/" in relpath:
        relpath = relpath.rsplit("/", 1)[0]
        yield relpath


def _select_parents(root: SourceRoot, pattern: str) -> Selected:
    """``COPY --parents``: the pivot directory narrowed to what ``pattern`` (below it) matches."""
    pivot, pivoted, below = pattern.partition("/./")
    if not pivoted:
        pivot, below = "/", pattern
    pivot, below = clean("/" + pivot).strip("/"), clean("/" + below).strip("/")
    try:
        include = compile_pattern(below) if below else None
    except ContextError as exc:
        raise ContextError(f"COPY source {pattern!r}: {str(exc).removeprefix('.dockerignore: ')}") from None
    try:
        real = _relative(root, resolve_in_root(root.path, "/" + pivot, follow_final=True, seen=root.seen))
        top = _entry(root.path / real, "")
        if top.kind != "dir" or (pivot and root.ignored(pivot) and root.skippable(pivot)):
            raise _not_found("/" + pivot)
        if include is None:
            return Selected(pivot, real, tuple(_scan(root, real, "") or (top,)))
        entries = _included(root, real, "", include)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found("/" + pivot) from None
    if not has_wildcards(pattern) and not entries:
        raise _not_found("/" + _join(pivot, below))
    return Selected(pivot, real, (top, *entries))


def _included(root: SourceRoot, real: str, below: str, include: IgnorePattern) -> list[Entry]:
    """Entries under ``real/below`` that ``include`` matches (whole subtrees), with their parents."""
    out: list[Entry] = []
    for name in _children(root, _join(real, below)):
        rel = _join(below, name)
        if include.match_or_parent(rel):
            out.extend(_scan(root, real, rel) or ())
            continue
        path = _join(real, rel)
        if not stat.S_ISDIR(os.lstat(root.path / path).st_mode) or root.skippable(path):
            continue
        if include.may_match_below(tuple(rel.split("/"))):
            inner = _included(root, real, rel, include)
            if inner:
                out.append(_entry(root.path / path, rel))
                out.extend(inner)
    return out


def _select_each(root: SourceRoot, pattern: str, exclude: IgnoreMatcher | None) -> list[Selected]:
    out: list[Selected] = []
    for relpath, below in _expand(root, pattern):
        found = _follow(root, relpath)
        if found is None:
            hint = " (excluded by .dockerignore)" if root.ignored(relpath) else ""
            raise _not_found("/" + relpath, hint)
        if exclude is None or below is None or found.is_dir or not exclude.matches(below):
            out.append(found)
    return out


def select(root: SourceRoot, patterns: Sequence[str], *, parents: bool = False,
           excludes: Sequence[str] = ()) -> list[Selected]:
    """Expand the source arguments of one COPY/ADD into what each will copy, in order.

    Raises :class:`ContextError` (message ending in ``not found``) for a
    literal source that does not exist or is ignored; a wildcard that
    matches nothing contributes nothing.  ``parents`` and ``excludes`` are
    ``--parents`` and ``--exclude`` (see the module docstring).
    """
    exclude = _matcher(excludes)
    selected: list[Selected] = []
    for pattern in patterns:
        try:
            found = [_select_parents(root, pattern)] if parents else _select_each(root, pattern, exclude)
            selected.extend(_without_excluded(f, exclude) if exclude else f for f in found)
        except OSError as exc:
            raise ContextError(f"reading COPY source {pattern!r}: {exc}") from exc
    return selected


def file_digest(path: Path | str, entry: Entry, cache: StatCache | None = None) -> str:
    """``sha256:<hex>`` of a regular file's contents, through the stat cache when given."""
    key = str(path)
    ino = entry.inode[1]
    if cache is not None:
        known = cache.get(key, entry.size, entry.ctime_ns, ino, entry.mode)
        if known is not None:
            return known
    try:
        with open(path, "rb") as handle:
            digest = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise BuildError(f"reading {path}: {exc.strerror}") from exc
    if cache is not None:
        cache.put(key, entry.size, entry.ctime_ns, ino, entry.mode, digest)
    return digest


def _field(sink: hashlib._Hash, value: str | int) -> None:
    sink.update(_encoded(value))


_LENGTHS = tuple(n.to_bytes(8, "big") for n in range(1024))


def _encoded(value: str | int) -> bytes:
    """A field as checksum() hashes it: its length (8 bytes, big-endian), then its bytes."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else b"%d" % value
    size = len(data)
    return (_LENGTHS[size] if size < 1024 else size.to_bytes(8, "big")) + data


def checksum(root: SourceRoot, selected: Sequence[Selected], stat_cache: StatCache | None = None) -> str:
    """Content checksum (``sha256:<hex>``) of what a COPY will write, for its cache key.

    Covers, per source in order: its name, and per entry the relative path,
    type, permission bits (setuid/setgid/sticky included), symlink target,
    device number, hard-link grouping and file contents; owners only for a
    stage root (the context's are reset by COPY).  Never mtimes.  Ignored
    files are not in ``selected``, so they never count.
    """
    sink = hashlib.sha256(b"lamina-copy-sources-v1\0")
    for source in selected:
        _field(sink, source.name)
        _field(sink, len(source.entries))
        first_link: dict[tuple[int, int], int] = {}
        for index, entry in enumerate(source.entries):
            # one update per entry of the same bytes as one per field: the same checksum, fewer calls
            fields: list[str | int] = [entry.relpath, entry.kind, entry.mode, entry.link_target, entry.rdev]
            if root.keep_owners:
                fields += [entry.uid, entry.gid]
            if entry.kind == "file":
                fields.append(first_link.setdefault(entry.inode, index) if entry.nlink > 1 else index)
                fields.append(file_digest(_host(root, source.real, entry.relpath), entry, stat_cache))
            sink.update(b"".join(map(_encoded, fields)))
    return "sha256:" + sink.hexdigest()


__all__ = ["Entry", "Kind", "Selected", "SourceRoot", "StatCache", "checksum", "file_digest", "select"]
