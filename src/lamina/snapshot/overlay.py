"""Overlayfs mounts of layer snapshots, with a fresh upper dir per build step.

``prepare`` mounts the lower snapshots (top-most first) under a new upper dir
and returns an :class:`OverlayMount`; the step writes into ``root``; after
``unmount`` the upper dir holds exactly the step's changes in overlay format
(see :mod:`lamina.snapshot.diff`). ``redirect_dir`` and ``metacopy`` are
turned off: with them, a renamed directory or a chmod'ed file would leave only
an xattr pointing into a lower layer and the layer would lose content.

``mount(2)`` takes at most one page of options. When the absolute lower paths
do not fit, the mount runs in a short ``mount`` subprocess whose working
directory is the snapshots dir, so the paths can be relative; this process
never changes its own working directory (other threads rely on it).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from lamina import syscalls
from lamina.errors import RuntimeError_
from lamina.snapshot._workdir import new_workdir, stale_workdirs

_PAGE = 4096
_BUSY_RETRIES = 50  # × 20 ms before a lazy unmount
# Tried in order: older kernels reject options for features they lack (and so
# cannot have turned on). ``volatile`` (Linux 5.10) skips syncing the whole upper
# filesystem at unmount (10-150 ms each, more on a busy disk): the upper dir is read
# through the page cache right after, and is never mounted as an upper again.
_OPTION_SETS = (
    ("redirect_dir=off", "metacopy=off", "index=off", "xino=off", "volatile"),
    ("redirect_dir=off", "metacopy=off", "index=off", "xino=off"),
    ("redirect_dir=off", "metacopy=off"),
    ("redirect_dir=off",),
    (),
)
_UNSAFE_CHARS = (",", ":", "\\")


def _mount(data: str, target: Path) -> None:
    syscalls.mount("overlay", target, "overlay", 0, data)


def _umount(target: Path, *, detach: bool = False) -> None:
    syscalls.umount(target, detach=detach)


def mounts_under(root: Path) -> tuple[Path, ...]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    prefix = os.path.realpath(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            point = _unescape(line.split(" ")[4])
            if (point + "/").startswith(prefix):
                found.append(Path(point))
    return tuple(sorted(set(found), key=lambda p: -len(p.parts)))


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


# What a successful probe found can be kept in a record file (the store keeps one) for the next
# process: a test mount costs a few hundred ms on a busy machine. The record is keyed by the kernel
# release and the probed directory's filesystem (its device); a mount that fails with remembered
# options forgets them and probes afresh.


def _probe_key(probe_dir: str) -> str:
    return f"{os.uname().release} dev={os.stat(probe_dir).st_dev}"


def _remembered(record: str, key: str) -> tuple[str, ...] | None:
    try:
        with open(record, encoding="utf-8") as lines:
            found = lines.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if len(found) < 2 or found[0] != key:
        return None
    options = tuple(o for o in found[1].split(",") if o)
    return options if options in _OPTION_SETS else None


def _remember(record: str, key: str, options: tuple[str, ...]) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(record))
    except OSError:  # a read-only store still works: it probes every time
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"{key}\n{','.join(options)}\n")
        os.replace(tmp, record)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _forget(record: str | None) -> None:
    _probe.cache_clear()
    if record is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record)


@functools.cache
def _probe(probe_dir: str, record: str | None = None) -> tuple[str, ...] | None:
    """The option set this kernel accepts for a mount under ``probe_dir``, or None.

    With ``record`` (a file path) a success is remembered there, across processes.
    """
    os.makedirs(probe_dir, exist_ok=True)
    key = _probe_key(probe_dir)
    options = _remembered(record, key) if record is not None else None
    if options is None:
        options = _probe_mount(probe_dir)
        if options is not None and record is not None:
            _remember(record, key, options)
    return options


def _probe_mount(probe_dir: str) -> tuple[str, ...] | None:
    """Try a test mount with each option set in turn."""
    base = Path(tempfile.mkdtemp(prefix=".probe-", dir=probe_dir))
    try:
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir()
        for options in _OPTION_SETS:
            data = ",".join((f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work", *options))
            try:
                _mount(data, base / "merged")
            except OSError:
                continue
            _umount(base / "merged", detach=True)
            return options
        return None
    finally:
        if not os.path.ismount(base / "merged"):
            shutil.rmtree(base, ignore_errors=True)


def available(probe_dir: Path | None = None, record: Path | None = None) -> bool:
    """Whether an overlay mount works here (tried once per directory, then remembered).

    ``record``: a file where a success is kept for later processes (see :class:`OverlaySnapshotter`).
    """
    where = os.path.realpath(probe_dir or tempfile.gettempdir())
    try:
        return _probe(where, _record_path(record)) is not None
    except OSError:
        return False


def _record_path(record: Path | None) -> str | None:
    return None if record is None else os.path.realpath(record)


class OverlaySnapshotter:
    """Mounts overlayfs with ``mount(2)``; needs root (or CAP_SYS_ADMIN) and a kernel with overlay.

    ``probe_record``: a file that remembers, across processes, which mount options the kernel
    accepts under a work root, so that not every build pays for a test mount.
    """

    name = "overlayfs"

    def __init__(self, probe_record: Path | None = None) -> None:
        self._record = _record_path(probe_record)

    def prepare(self, lowers: Sequence[Path], work_root: Path) -> OverlayMount:
        """Mount ``lowers`` (top-most first) under a fresh upper dir inside ``work_root``.

        ``work_root`` must be on the snapshots' filesystem for the upper dir to
        be renamed into a snapshot later. Raises :class:`RuntimeError_`.
        """
        try:
            options = _probe(os.path.realpath(work_root), self._record)
        except OSError as exc:
            raise RuntimeError_(f"preparing overlay under {work_root}: {exc}") from exc
        if options is None:
            raise RuntimeError_(f"overlayfs cannot be mounted under {work_root}")
        base, lock_fd = new_workdir(work_root)
        try:
            dirs = {name: base / name for name in ("upper", "work", "merged")}
            if not lowers:  # FROM scratch: overlay needs at least one lower
                dirs["empty"] = base / "empty"
                lowers = (dirs["empty"],)
            for path in dirs.values():
                path.mkdir()
                os.chmod(path, 0o755)  # the upper dir's mode is the container root's
            mount_args = (tuple(Path(p) for p in lowers), dirs["upper"], dirs["work"], dirs["merged"])
            try:
                _mount_overlay(*mount_args, options)
            except RuntimeError_:
                _forget(self._record)  # what was remembered may be stale (a new kernel, another disk)
                fresh = _probe(os.path.realpath(work_root), self._record)
                if fresh is None or fresh == options:
                    raise
                _mount_overlay(*mount_args, fresh)
        except BaseException:
            os.close(lock_fd)
            if not os.path.ismount(base / "merged"):
                shutil.rmtree(base, ignore_errors=True)
            raise
        return OverlayMount(base, dirs["upper"], dirs["merged"], lock_fd)

    def cleanup_stale(self, work_root: Path) -> int:
        """Unmount and remove what dead processes left in ``work_root``; return how many."""
        removed = 0
        for base in stale_workdirs(work_root):
            for point in mounts_under(base):
                _umount(point, detach=True)
            if mounts_under(base):
                continue
            try:
                shutil.rmtree(base)
            except OSError:  # something still writes there (a container in another mount namespace): next time
                continue
            removed += 1
        return removed


def _mount_overlay(
    lowers: tuple[Path, ...], upper: Path, work: Path, merged: Path, options: tuple[str, ...]
) -> None:
    for path in (*lowers, upper, work):
        if any(c in str(path) for c in _UNSAFE_CHARS):
            raise RuntimeError_(f"overlay paths may not contain , : or \\ : {path}")
    absolute = _options(
        [str(p.absolute()) for p in lowers], str(upper.absolute()), str(work.absolute()), options
    )
    if len(absolute) < _PAGE:
        try:
            _mount(absolute, merged)
        except OSError as exc:
            raise RuntimeError_(f"mounting overlay at {merged}: {exc.strerror}") from exc
        return
    cwd = os.path.commonpath([str(p.absolute()) for p in lowers])
    relative = _options(
        [os.path.relpath(p.absolute(), cwd) for p in lowers],
        _shorter(upper, cwd),
        _shorter(work, cwd),
        options,
    )
    if len(relative) >= _PAGE:
        raise RuntimeError_(f"too many layers to mount ({len(lowers)}): options exceed one page")
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", relative, str(merged.absolute())],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError_(f"mounting overlay at {merged}: {done.stderr.strip()}")


def _options(lowers: list[str], upper: str, work: str, extra: tuple[str, ...]) -> str:
    return ",".join((f"lowerdir={':'.join(lowers)}", f"upperdir={upper}", f"workdir={work}", *extra))


def _shorter(path: Path, cwd: str) -> str:
    relative = os.path.relpath(path.absolute(), cwd)
    return relative if len(relative) < len(str(path.absolute())) else str(path.absolute())


class OverlayMount:
    """One mounted overlay. As a context manager: unmounts on success, discards on error."""

    def __init__(self, base: Path, upper: Path, merged: Path, lock_fd: int) -> None:
        self._base = base
        self._merged = merged
        self._lock_fd: int | None = lock_fd
        self._mounted = True
        self.upper = upper

    @property
    def root(self) -> Path:
        """The merged view the step reads and writes."""
        return self._merged

    def unmount(self) -> None:
        """End the mount (idempotent); ``upper`` then holds the step's changes."""
        if not self._mounted:
            return
        for _attempt in range(_BUSY_RETRIES):
            try:
                _umount(self._merged)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise RuntimeError_(f"unmounting {self._merged}: {exc.strerror}") from exc
                # Another thread's fork (a RUN of a parallel stage) briefly holds copies of our
                # open files until it execs; nothing writes here any more, so wait, then detach.
                time.sleep(0.02)
        else:
            _umount(self._merged, detach=True)
        self._mounted = False

    def discard(self) -> None:
        """Unmount (lazily if busy) and remove every directory of this mount still here."""
        if self._mounted:
            try:
                _umount(self._merged)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    _umount(self._merged, detach=True)
                elif exc.errno != errno.EINVAL:  # EINVAL: someone else unmounted it already
                    raise RuntimeError_(f"unmounting {self._merged}: {exc.strerror}") from exc
            self._mounted = False
        if mounts_under(self._base):  # never delete through a mount into the lower layers
            raise RuntimeError_(f"{self._merged} is still mounted; not removing it")
        shutil.rmtree(self._base, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> OverlayMount:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.unmount()
        else:
            self.discard()
