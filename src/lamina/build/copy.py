"""COPY and ADD: write selected sources into an image's root directory.

The target is a plain directory (the builder passes an overlayfs mount of the
image being built).  Every path in it is resolved with
:func:`~lamina.build.rootpath.resolve_in_root`, so a symlink in the image can
redirect a write only to somewhere else *inside* the image.

The semantics are BuildKit's (tonistiigi/fsutil ``copy`` driven by the
Dockerfile frontend), checked against Docker 20.10:

* ``dest`` is relative to WORKDIR; a trailing ``/`` (or ``.``) makes it a
  directory.  Several sources into anything but a directory is refused with
  the classic builder's message (BuildKit 20.10 silently accepts it).
* Missing parents are created 0755, owned by the ``--chown`` user (else 0:0).
* A directory source copies its *contents*; the destination directory itself
  keeps its mode and owner when it exists, and is created 0755 when not.
  Everything below it takes the source's mode and mtime, even where an
  existing directory is merged into.
* A file source lands inside ``dest`` when that is an existing directory
  (symlinks followed), else at ``dest``; an existing file or symlink there is
  replaced, an existing directory is an error.
* Owners are ``--chown`` if given, else the source's for a stage root
  (``COPY --from``), else 0:0 for the build context.  ``--chmod`` replaces all
  permission bits of every copied file and directory.
* Hard links between entries of *one* source stay hard links (each source
  has its own link table, so ``COPY h1 h2 /d/`` makes two files, as in 062).
  Symlinks are copied as symlinks.  FIFOs and device nodes are recreated;
  sockets are skipped, as Docker's context archiver does (and a FIFO of the
  build context is never selected: BuildKit does not transfer it).
* ADD of a local file that is a tar archive (plain, gzip, bzip2, xz or zstd,
  by magic bytes) extracts it into ``dest`` instead, see :func:`extract_tar`.
* ADD of a URL (a :class:`~lamina.build.remote.Remote`, already fetched)
  lands like a file source named after the URL: mode 0600 (or ``--chmod``),
  owner ``--chown`` or 0:0, the ``Last-Modified`` mtime; extracted only with
  ``--unpack=true`` (and ``--unpack=false`` keeps a local archive a file).
* ``--link`` (see :func:`link_chown`) copies into an empty root: the caller
  mounts one, so parents are created 0755 as above and nothing of the
  image below is followed or kept.
"""

from __future__ import annotations

import bz2
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from lamina.build.context import Entry, Selected, SourceRoot
from lamina.build.remote import Remote
from lamina.build.rootpath import clean, resolve_in_root
from lamina.errors import BuildError, LaminaError, LayerError
from lamina.model import model
from lamina.syscalls import cpus

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

Owner = tuple[int, int]


@model
class Inline:
    """A heredoc source (``COPY <<EOF /path``): a file name and its contents."""

    name: str
    content: bytes


def destination(dest: str, workdir: str) -> tuple[str, bool]:
    """Return ``dest`` as a clean absolute path, and whether it must be a directory."""
    as_dir = dest in ("", ".") or dest.endswith("/")
    return clean(posixpath.join("/", workdir, dest)), as_dir


def mkdir_all(root: Path, path: str, owner: Owner) -> Path:
    """Create the in-image directory ``path`` and its missing parents (0755, ``owner``).

    Existing directories are left as they are; returns the host path.
    """
    host = resolve_in_root(root, path, follow_final=True)
    current = root
    for part in host.relative_to(root).parts:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            os.lchown(current, *owner)
            os.chmod(current, 0o755)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise BuildError(f"mkdir {path}: not a directory")
    return host


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _clear(target: Path) -> None:
    """Make room for a non-directory at ``target``: remove a file or link, refuse a directory."""
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        raise BuildError(f"cannot replace directory {target.name} with a file")
    os.unlink(target)


def _copy_content(src: Path, dst: Path) -> None:
    """The bytes of ``src`` into the new file ``dst``, inside the kernel (see :mod:`lamina.snapshot.filecopy`)."""
    from lamina.snapshot.filecopy import copy_fd  # lamina.snapshot's imports are for builds that run steps

    fd_in = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd_out = os.open(dst, _CREATE, 0o600)
        try:
            copy_fd(fd_in, fd_out)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _create(target: Path) -> int:
    """A new file at ``target`` open for writing, replacing a file or link there (see :func:`_clear`)."""
    try:
        return os.open(target, _CREATE, 0o600)
    except FileExistsError:
        _clear(target)
        return os.open(target, _CREATE, 0o600)


def _apply(target: Path, entry: Entry, owner: Owner, chmod: int | None) -> None:
    # chown first: it clears setuid/setgid bits that chmod then sets.
    os.lchown(target, *owner)
    if entry.kind != "symlink":
        os.chmod(target, entry.mode if chmod is None else chmod)
    if entry.kind != "dir":
        os.utime(target, ns=(entry.atime_ns, entry.mtime_ns), follow_symlinks=False)


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """``raw`` decompressed according to its magic bytes (unchanged if none matches)."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        from isal import igzip

        return cast(IO[bytes], igzip.IGzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
    if magic.startswith(b"BZh"):
        return cast(IO[bytes], bz2.BZ2File(raw))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(IO[bytes], lzma.LZMAFile(raw))
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
        return cast(IO[bytes], reader)
    return raw


@contextmanager
def open_tar(path: Path) -> Iterator[tarfile.TarFile | None]:
    """Open ``path`` as a (possibly compressed) tar stream; yield None if it is not one.

    Like BuildKit's ``isArchivePath``, the test is "does a tar header follow
    after decompression", never the file name.
    """
    with ExitStack() as stack:
        raw = stack.enter_context(open(path, "rb"))
        tar: tarfile.TarFile | None
        try:
            stream = stack.enter_context(_decompressed(raw))
            tar = stack.enter_context(tarfile.open(fileobj=stream, mode="r|"))
        except Exception:  # any failure to decode (zstd, gzip, tar) means "not an archive"
            tar = None
        yield tar


def _archive_path(name: str, what: str) -> str:
    """An archive member name made relative to the extraction root.

    Docker extracts ADD's archives chrooted into the destination, so a name
    climbing out with ``..`` (or an absolute one) is clamped at that root.
    """
    return clean("/" + name).lstrip("/")


def _create_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, root: Path) -> None:
    """Create the filesystem object ``member`` describes at ``target`` (its place is free)."""
    if member.isdir():
        if not target.is_dir():
            os.mkdir(target, 0o700)
    elif member.isreg():
        source = tar.extractfile(member)
        assert source is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with source, open(os.open(target, flags, 0o600), "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    elif member.issym():
        os.symlink(member.linkname, target)
    elif member.islnk():
        link = _archive_path(member.linkname, "hard link")
        if not link:
            raise LayerError(f"archive hard link {member.name!r} targets the extraction root")
        os.link(resolve_in_root(root, link, follow_final=False), target, follow_symlinks=False)
    elif member.isfifo():
        os.mkfifo(target, 0o600)
    elif member.ischr() or member.isblk():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(target, 0o600 | kind, os.makedev(member.devmajor, member.devminor))
    else:
        raise LayerError(f"archive member {member.name!r}: unsupported type {member.type!r}")


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, owner: Owner) -> Path | None:
    """Create one member under ``root`` (symlinks resolved inside ``root``); None if skipped."""
    name = _archive_path(member.name, "path")
    if not name:
        return None  # the archive's "./": the destination keeps its owner and mode (057)
    parent = mkdir_all(root, "/" + posixpath.dirname(name), (0, 0))
    target = parent / posixpath.basename(name)
    is_real_dir = target.is_dir() and not target.is_symlink()
    if is_real_dir and not member.isdir():
        shutil.rmtree(target)
    elif os.path.lexists(target) and not is_real_dir:
        os.unlink(target)
    _create_member(tar, member, target, root)
    os.lchown(target, *owner)
    if not target.is_symlink():
        os.chmod(target, member.mode & 0o7777)
        if not member.isdir():
            os.utime(target, (member.mtime, member.mtime))
    return target


def extract_tar(tar: tarfile.TarFile, root: Path, *, chown: Owner | None, name: str) -> None:
    """Extract a tar stream into the host directory ``root`` as ADD does.

    Existing directories are merged into (their metadata replaced by the
    member's, except the archive root's), anything else in the way is
    replaced.  Owners are the archive's numeric ids unless ``chown`` is given
    (current BuildKit applies ``--chown`` to extracted files too).  Names
    with ``..`` climbing out of ``root`` stop at it, and symlinks met while
    resolving parents are followed inside ``root``, as under Docker's chroot.
    """
    dirs: list[tuple[Path, float]] = []
    try:
        for member in tar:
            owner = chown if chown is not None else (member.uid, member.gid)
            target = _extract_member(tar, member, root, owner)
            if target is not None and member.isdir():
                dirs.append((target, member.mtime))
    except (LaminaError, OSError):
        raise
    except Exception as exc:  # tarfile, gzip, xz, zstd: a corrupt or hostile stream
        raise LayerError(f"extracting {name}: {exc}") from exc
    for target, mtime in reversed(dirs):
        os.utime(target, (mtime, mtime))


_PARALLEL_FROM = 32  # regular files in one source before copies go to threads
_WORKERS = min(4, cpus())
_BATCH = 32  # copies per task: a task per file spent more on queue and GIL hand-offs than on the file


class _FileWorkers:
    """Runs file copies on a few threads (or at once, when ``parallel`` is false); the first error wins.

    Copies go to the threads in batches: each thread then runs many files' system calls in a
    row instead of waking up, and handing the GIL over, once per file.
    Leaving the ``with`` block waits for every copy, so nothing is still being written when the
    caller sets directory times or the layer is committed.
    """

    def __init__(self, parallel: bool) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._batch: list[tuple[Callable[..., None], tuple[object, ...]]] = []
        if parallel:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="lamina-copy")

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        if self._pool is None:
            fn(*args)
            return
        self._batch.append((fn, args))
        if len(self._batch) >= _BATCH:
            self._send()

    def _send(self) -> None:
        assert self._pool is not None
        if self._batch:
            self._pending.append(self._pool.submit(_run_batch, self._batch))
            self._batch = []
        if len(self._pending) >= 4 * _WORKERS:  # bound the queue; surface errors early
            self._drain(_WORKERS)

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            self._pending.pop(0).result()

    def __enter__(self) -> _FileWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is None:
            return
        try:
            if exc[0] is None:
                self._send()
                self._drain(0)
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)


def _run_batch(batch: list[tuple[Callable[..., None], tuple[object, ...]]]) -> None:
    for fn, args in batch:
        fn(*args)


@model
class _Copier:
    root: Path
    source_root: SourceRoot | None
    chown: Owner | None
    chmod: int | None

    @property
    def parent_owner(self) -> Owner:
        return self.chown or (0, 0)

    def owner(self, entry: Entry) -> Owner:
        if self.chown is not None:
            return self.chown
        keep = self.source_root is not None and self.source_root.keep_owners
        return (entry.uid, entry.gid) if keep else (0, 0)

    def prepare(self, dest: str, as_dir: bool) -> Path:
        """Create what BuildKit creates before copying a source; return resolved ``dest``."""
        mkdir_all(self.root, dest if as_dir else posixpath.dirname(dest), self.parent_owner)
        return resolve_in_root(self.root, dest, follow_final=True)

    def source(self, source: Selected, dest: str, as_dir: bool) -> None:
        assert self.source_root is not None
        host = self.prepare(dest, as_dir)
        if source.is_dir:
            if os.path.lexists(host) and not host.is_dir():  # BuildKit's wording
                raise BuildError(f"cannot copy to non-directory: {dest}")
            top = mkdir_all(self.root, dest, self.parent_owner)
        else:
            top = host / source.name if host.is_dir() else host
        self.entries(self.source_root.path / source.real, source.entries, top)

    def entries(self, base: Path, entries: Sequence[Entry], top: Path) -> None:
        """Create ``entries`` under ``top``: directories in order here, many files' copies at once.

        Creating a file is a journaled metadata write that can cost half a millisecond on a
        VM's disk, so a large tree's regular files go to a few threads (parents exist by then:
        entries come parents first); hard links, links and the rest stay in order here.
        """
        links: dict[tuple[int, int], Path] = {}
        dirs: list[tuple[Path, Entry]] = []
        parallel = sum(1 for e in entries if e.kind == "file") >= _PARALLEL_FROM
        with _FileWorkers(parallel) as workers:
            for entry in entries:
                target = top / entry.relpath if entry.relpath else top
                src = base / entry.relpath if entry.relpath else base
                if entry.kind == "dir":
                    if not entry.relpath:
                        continue  # the destination itself keeps its metadata
                    self.directory(target)
                    dirs.append((target, entry))
                elif entry.kind == "socket":
                    continue
                elif entry.kind == "file" and entry.nlink == 1:
                    workers.submit(self._file, src, target, entry)
                    continue
                else:
                    self.non_directory(src, target, entry, links)
                _apply(target, entry, self.owner(entry), self.chmod)
        for target, entry in reversed(dirs):  # after their contents, which touch them
            os.utime(target, ns=(entry.atime_ns, entry.mtime_ns), follow_symlinks=False)

    def _file(self, src: Path, target: Path, entry: Entry) -> None:
        """A regular file whole: its bytes, owner, mode and times set through the open descriptor,
        so the path is resolved (through the overlay) once, not four times."""
        from lamina.snapshot.filecopy import (
            copy_fd,  # lamina.snapshot's imports are for builds that run steps
        )

        owner = self.owner(entry)
        fd_in = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fd_out = _create(target)
            try:
                copy_fd(fd_in, fd_out)
                os.fchown(fd_out, *owner)  # before the mode: chown clears setuid/setgid
                os.fchmod(fd_out, entry.mode if self.chmod is None else self.chmod)
                os.utime(fd_out, ns=(entry.atime_ns, entry.mtime_ns))
            finally:
                os.close(fd_out)
        finally:
            os.close(fd_in)

    def directory(self, target: Path) -> None:
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            os.mkdir(target, 0o700)
            return
        if not stat.S_ISDIR(info.st_mode):
            raise BuildError(f"cannot copy a directory onto non-directory {target.name}")

    def non_directory(self, src: Path, target: Path, entry: Entry, links: dict[tuple[int, int], Path]) -> None:
        _clear(target)
        if entry.kind == "file":
            first = links.get(entry.inode) if entry.nlink > 1 else None
            if first is not None:
                os.link(first, target, follow_symlinks=False)
                return
            _copy_content(src, target)
            links[entry.inode] = target
        elif entry.kind == "symlink":
            os.symlink(entry.link_target, target)
        elif entry.kind == "fifo":
            os.mkfifo(target, 0o600)
        else:
            kind = stat.S_IFCHR if entry.kind == "char" else stat.S_IFBLK
            os.mknod(target, 0o600 | kind, entry.rdev)

    def inline(self, inline: Inline, dest: str, as_dir: bool) -> None:
        host = self.prepare(dest, as_dir)
        target = host / inline.name if host.is_dir() else host
        _clear(target)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with open(os.open(target, flags, 0o600), "wb") as out:
            out.write(inline.content)
        os.lchown(target, *self.parent_owner)
        os.chmod(target, 0o644 if self.chmod is None else self.chmod)

    def remote(self, remote: Remote, dest: str, as_dir: bool) -> None:
        host = self.prepare(dest, as_dir)
        target = host / remote.name if host.is_dir() else host
        _clear(target)
        _copy_content(remote.path, target)
        os.lchown(target, *self.parent_owner)
        os.chmod(target, 0o600 if self.chmod is None else self.chmod)
        if remote.mtime is not None:
            os.utime(target, (remote.mtime, remote.mtime), follow_symlinks=False)

    def archive(self, source: Selected, dest: str) -> bool:
        """Extract ``source`` into ``dest`` if it is a tar archive; False if it is not one."""
        assert self.source_root is not None
        return self.archive_file(self.source_root.path / source.real, dest, source.relpath)

    def archive_file(self, path: Path, dest: str, name: str) -> bool:
        """Extract the host file ``path`` into ``dest`` if it is a tar archive; False if it is not one."""
        with open_tar(path) as tar:
            if tar is None:
                return False
            host = mkdir_all(self.root, dest, self.parent_owner)
            extract_tar(tar, host, chown=self.chown, name=name)
        return True


def _check_count(copier: _Copier, count: int, dest: str, as_dir: bool, verb: str) -> None:
    if count > 1 and not as_dir and not resolve_in_root(copier.root, dest, follow_final=True).is_dir():
        raise BuildError(
            f"When using {verb} with more than one source file, the destination must be a directory and end with a /"
        )


def copy_into(
    target_root: Path,
    sources: Sequence[Selected | Inline | Remote],
    dest: str,
    *,
    src_root: SourceRoot | None = None,
    workdir: str = "/",
    chown: Owner | None = None,
    chmod: int | None = None,
    is_add: bool = False,
    unpack: bool | None = None,
) -> None:
    """Write ``sources`` (from :func:`~lamina.build.context.select`, or heredocs) into ``target_root``.

    ``src_root`` is the tree the :class:`Selected` values came from (needed
    unless every source is :class:`Inline`).  ``chown`` is already resolved
    (see :func:`~lamina.build.users.parse_chown`).  No sources (wildcards that
    matched nothing) writes nothing.  Raises :class:`BuildError`; a hostile
    archive raises :class:`~lamina.errors.LayerError`.  ``unpack`` is ADD's
    ``--unpack``: None extracts local archives only, True remote ones too,
    False none.
    """
    verb = "ADD" if is_add else "COPY"
    copier = _Copier(target_root, src_root, chown, chmod)
    path, as_dir = destination(dest, workdir)
    _check_count(copier, len(sources), path, as_dir, verb)
    if any(isinstance(s, Selected) for s in sources) and src_root is None:
        raise ValueError("copy_into: src_root is required for selected sources")
    for source in sources:
        shown = "/" + source.relpath if isinstance(source, Selected) else source.name
        try:
            if isinstance(source, Inline):
                copier.inline(source, path, as_dir)
            elif isinstance(source, Remote):
                if not (is_add and unpack and copier.archive_file(source.path, path, source.name)):
                    copier.remote(source, path, as_dir)
            elif not (is_add and unpack is not False and source.entries[0].kind == "file"
                      and copier.archive(source, path)):
                copier.source(source, path, as_dir)
        except OSError as exc:
            raise BuildError(f"{verb} {shown} to {dest}: {exc.strerror or exc}") from exc


def link_chown(spec: str) -> str:
    """A ``--chown`` spec usable with ``--link``: numeric ids, ``root`` meaning 0 (as BuildKit's llb reads it).

    A ``--link`` layer is built over an empty root, where no name resolves;
    BuildKit fails such a build (``invalid user index``), lamina says why.
    """
    parts = ["0" if part == "root" else part for part in spec.split(":", 1)]
    if not all(part.isdigit() for part in parts):
        raise BuildError(f"--chown={spec} with --link: use numeric ids (names cannot be resolved in "
                         "the empty root a --link layer is built in)")
    return ":".join(parts)


__all__ = ["Inline", "copy_into", "destination", "link_chown", "mkdir_all"]
