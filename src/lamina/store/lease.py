"""Leases: how running lamina processes keep garbage collection away from what they use.

Every process that reads or writes a store's content (build, pull, push,
load, run, the CLI's commands) holds a *lease* for as long as it works:

- a shared ``flock`` on ``leases/lock``. Garbage collection deletes blobs and
  snapshots only while it holds that lock *exclusively*, so it never sweeps
  beside a running operation — not even content the operation found in the
  store and is about to reference (content addressing makes any old,
  unreferenced blob reusable at any moment, so "older than" rules alone are
  not safe);
- a file ``leases/<pid>-<random>.lease`` (JSON: pid, operation, start time)
  that its owner keeps locked, so others can name who is running and since
  when. Metadata pruning keeps rows used since the oldest live lease began.

A process that finds no other live lease when it starts removes what dead
processes left (:func:`leftovers`): temp files, interrupted unpacks, stale
lease files. Leases nest within a process (counted per store), and the
kernel drops a killed process's locks, so a crash never blocks the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from lamina.errors import StoreError
from lamina.model import model

LEASES = "leases"
_LOCK = "lock"
_SUFFIX = ".lease"
_STALE_AFTER = 3600.0  # a temp entry this old is a leftover even if its pid looks alive (pid reuse)


@model
class LeaseInfo:
    """A live lease as another process sees it."""

    pid: int
    operation: str
    started: float  # epoch seconds
    name: str

    def describe(self, now: float | None = None) -> str:
        age = max(0.0, (now if now is not None else time.time()) - self.started)
        return f"{self.operation} (pid {self.pid}, for {_short_age(age)})"


@model(frozen=False)
class _Held:
    count: int
    lock_fd: int  # shared flock on leases/lock
    own_fd: int  # exclusive flock on the lease file
    path: Path


class Lease:
    """A running operation's hold on a store; a context manager, re-entrant within a process.

    ``clean`` lets the first lease of a process remove dead processes'
    leftovers when no other process holds one (a read-only caller such as
    ``system check`` passes False, to see them as they are).
    """

    _held: dict[Path, _Held] = {}
    _guard = threading.Lock()

    def __init__(self, root: Path, operation: str, *, clean: bool = True) -> None:
        self.root = Path(root).resolve()
        self.operation = operation
        self.clean = clean

    @property
    def name(self) -> str | None:
        """This process's lease file name for the store, while held."""
        held = Lease._held.get(self.root)
        return held.path.name if held else None

    def __enter__(self) -> Lease:
        with Lease._guard:
            held = Lease._held.get(self.root)
            if held is not None:
                held.count += 1
            else:
                Lease._held[self.root] = self._acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with Lease._guard:
            held = Lease._held[self.root]
            held.count -= 1
            if held.count > 0:
                return
            del Lease._held[self.root]
        with contextlib.suppress(FileNotFoundError):
            held.path.unlink()
        os.close(held.own_fd)
        os.close(held.lock_fd)

    def _acquire(self) -> _Held:
        directory = self.root / LEASES
        try:
            directory.mkdir(exist_ok=True)
            path = directory / f"{os.getpid()}-{os.urandom(6).hex()}{_SUFFIX}"
            own = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"store {self.root}: cannot take a lease: {exc.strerror or exc}") from exc
        fd = -1
        try:
            fcntl.flock(own, fcntl.LOCK_EX)  # a live pid covers the moment before this (see _is_live)
            os.write(own, json.dumps({"pid": os.getpid(), "operation": self.operation,
                                      "started": time.time()}).encode())
            fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if self.clean:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:  # nobody else works on the store: whatever is left over belongs to the dead
                    for entry in leftovers(self.root, exclude=path.name):
                        remove(entry)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a garbage collection sweeps
        except BaseException:  # Ctrl-C while waiting, say: leave nothing behind
            path.unlink(missing_ok=True)
            os.close(own)
            if fd >= 0:
                os.close(fd)
            raise
        return _Held(1, fd, own, path)


@contextlib.contextmanager
def exclusive(root: Path) -> Iterator[bool]:
    """Hold the store exclusively if no lease is held; yields whether it could (never waits)."""
    directory = Path(root) / LEASES
    directory.mkdir(exist_ok=True)
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def live_leases(root: Path, *, exclude: str | None = None) -> tuple[LeaseInfo, ...]:
    """The leases of running processes, oldest first (``exclude``: a lease file name to skip)."""
    found = []
    for path in _lease_files(root):
        if path.name != exclude and _is_live(path):
            found.append(_info(path))
    return tuple(sorted(found, key=lambda info: info.started))


def leftovers(root: Path, *, exclude: str | None = None) -> list[Path]:
    """What dead processes left: stale lease files, temp entries, interrupted unpacks.

    Call it only where no other lease is live (holding the lock exclusively, or
    after :func:`live_leases` came back empty): a live *leased* process may own
    any of these. Entries whose name carries the pid of a running process are
    still spared (a process that writes without a lease), unless an hour old.
    """
    found = [p for p in _lease_files(root) if p.name != exclude and not _is_live(p)]
    now = time.time()
    for directory, prefix in ((Path(root) / "tmp", ""), (Path(root) / "snapshots", ".tmp-")):
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            if not entry.name.startswith(prefix):
                continue
            with contextlib.suppress(FileNotFoundError):
                old = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_AFTER
                if old or not process_alive(_pid_in(entry.name)):
                    found.append(Path(entry.path))
    return found


def remove(path: Path) -> int:
    """Delete a file or directory tree; the bytes of the files it held."""
    size = tree_size(path)
    if path.is_dir() and not path.is_symlink():
        import shutil  # rarely needed: a command that only holds a lease need not load it

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return size


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (each hard-linked inode once)."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return top.st_size
    total, seen = 0, set()
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_nlink > 1:
                    if st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                total += st.st_size
    return total


def _lease_files(root: Path) -> list[Path]:
    directory = Path(root) / LEASES
    if not directory.is_dir():
        return []
    return [Path(e.path) for e in os.scandir(directory) if e.name.endswith(_SUFFIX)]


def _is_live(path: Path) -> bool:
    """Locked by its owner, or its owner is running (it may not have locked it yet)."""
    if process_alive(_pid_in(path.name, position=0)):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        try:
            return path.stat().st_size == 0  # created, not locked yet (else: a reused pid's leftover)
        except FileNotFoundError:
            return False
    return False


def _info(path: Path) -> LeaseInfo:
    pid = _pid_in(path.name, position=0)
    try:
        doc = json.loads(path.read_text())
        return LeaseInfo(int(doc["pid"]), str(doc["operation"]), float(doc["started"]), path.name)
    except (OSError, ValueError, KeyError, TypeError):
        return LeaseInfo(pid, "unknown", time.time(), path.name)


def _pid_in(name: str, position: int = 1) -> int:
    """The pid a temp name carries (``blob-<pid>-…``, ``runmnt-<pid>-…``, ``<pid>-….lease``), else 0."""
    parts = name.split("-")
    if len(parts) > position and parts[position].isdigit() and len(parts[position]) <= 7:
        return int(parts[position])
    return 0


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one owned by another user counts): the test every cleanup
    of a dead lamina process's leftovers makes (leases, temp names, mount work dirs)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _short_age(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
