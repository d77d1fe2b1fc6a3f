"""Preparing a RUN's ``--mount``\\ s on the host, and leaving no trace of them afterwards.

:class:`RunMounts` binds the parsed mounts (:mod:`lamina.build.mounts`) of
one RUN to the build: it resolves ``from=`` stages and images and checksums
bind sources from the context when the cache key is computed, and
:meth:`RunMounts.prepared` sets everything up around the container run:

* ``cache``: a directory kept in the store (``cache-mounts/``), locked per
  its ``sharing`` mode (a shared or exclusive ``flock``; ``private`` takes
  the first free instance), created with ``mode``/``uid``/``gid`` and seeded
  from ``from``/``source`` when new;
* ``secret``: a file on a tmpfs mounted in lamina's own mount namespace
  (never on disk), bind-mounted read-only, or an environment variable;
* ``bind``: the context source copied with COPY's rules (so .dockerignore
  holds and ``rw`` writes land in a throw-away copy), or a path of a stage
  or image mounted for the run;
* ``tmpfs``: a runtime tmpfs.

Mount points the runtime had to create are removed afterwards, and the
directory they were created in gets its times back, so no stub reaches the
layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina import syscalls
from lamina.build.context import Selected, checksum, select
from lamina.build.mounts import Redactor, RunMount, SecretSource, parse_mounts
from lamina.build.rootpath import resolve_in_root
from lamina.errors import BuildError, LaminaError
from lamina.model import model
from lamina.store.lease import process_alive

if TYPE_CHECKING:  # copy and the runtime load only when a RUN really runs (a cached build never does)
    from lamina.build.stagerun import StageRun
    from lamina.dockerfile import instructions as ins
    from lamina.dockerfile.shell import Lexer
    from lamina.image.image import Image
    from lamina.runtime.spec import Mount

CACHE_DIR = "cache-mounts"
TMP_PREFIX = "runmnt-"
_SECRETS_TMPFS_SIZE = "16m"


@model
class Prepared:
    """What the container gets: OCI mounts, and ``KEY=value`` entries for its environment."""

    mounts: tuple[Mount, ...] = ()
    env: tuple[str, ...] = ()
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    """The secret values this run sees, so its output can be redacted."""

    def redacting(self, output: Callable[[bytes], None]) -> Redactor | None:
        """A filter hiding the secrets in ``output``, or None when there are none to hide."""
        return Redactor(output, self.secrets) if self.secrets else None


class RunMounts:
    """The mounts of one RUN, with their sources resolved against the build."""

    def __init__(self, stage: StageRun, mounts: tuple[RunMount, ...], where: str) -> None:
        self._stage = stage
        self._run = stage.run
        self.mounts = mounts
        self._where = where
        self._images: dict[int, tuple[Image, str]] = {}
        self._selected: dict[int, list[Selected]] = {}

    def key_inputs(self) -> list[dict[str, Any]]:
        """Each mount's spec, plus what its content depends on: a stage's key, a context checksum."""
        out = []
        for index, mount in enumerate(self.mounts):
            item = mount.key_inputs()
            if mount.type in ("bind", "cache") and mount.from_:
                item["from_key"] = self._image(index)[1]
            elif mount.type == "bind":
                item["checksum"] = checksum(self._run.context, self._context_source(index), self._run.stat_cache)
            out.append(item)
        return out

    def _image(self, index: int) -> tuple[Image, str]:
        if index not in self._images:
            from lamina.dockerfile.stages import stage_index

            name = self.mounts[index].from_
            try:
                found = stage_index(self._run.dockerfile, name, before=self._stage.stage.index)
                if found is not None:
                    result = self._run.stage_result(found)
                    self._images[index] = (result.image, result.key)
                else:
                    self._images[index] = self._run.base_image(name)
            except LaminaError as exc:
                raise BuildError(f"{self._where}: --mount from={name}: {exc}") from exc
        return self._images[index]

    def _context_source(self, index: int) -> list[Selected]:
        if index not in self._selected:
            source = self.mounts[index].source.strip("/") or "."
            try:
                self._selected[index] = select(self._run.context, [source])
            except LaminaError as exc:
                raise BuildError(f"{self._where}: --mount source={self.mounts[index].source}: {exc}") from exc
        return self._selected[index]

    @contextlib.contextmanager
    def prepared(self, root: Path) -> Iterator[Prepared]:
        """Set up every mount for a run over ``root``; undo all of it on the way out."""
        from lamina.runtime.spec import Mount

        with contextlib.ExitStack() as stack:
            store_root = self._run.store.root
            scratch = _scratch_dir(store_root)
            stack.callback(shutil.rmtree, scratch, True)
            stubs = _StubTracker(root, [m.target for m in self.mounts if m.target])
            stack.callback(stubs.cleanup)
            mounts: list[Mount] = []
            env: list[str] = []
            values: list[bytes] = []
            secrets_dir: Path | None = None
            for index, mount in enumerate(self.mounts):
                if mount.type == "cache":
                    path = stack.enter_context(self._cache_dir(index, store_root / CACHE_DIR))
                    mounts.append(Mount.bind(str(path), mount.target, readonly=mount.readonly))
                elif mount.type == "tmpfs":
                    mounts.append(_tmpfs(mount))
                elif mount.type == "secret":
                    value = self._secret_value(mount)
                    if value is None:
                        continue
                    values.append(value)
                    if mount.env:
                        env.append(f"{mount.env}={os.fsdecode(value)}")
                    if mount.target:
                        if secrets_dir is None:
                            secrets_dir = stack.enter_context(_secrets_tmpfs(scratch / "secrets"))
                        mounts.append(_secret_file(secrets_dir, len(mounts), mount, value))
                else:
                    mounts.append(self._bind(index, stack, scratch))
            yield Prepared(tuple(mounts), tuple(env), tuple(values))

    # the kinds ------------------------------------------------------------------------
    def _secret_value(self, mount: RunMount) -> bytes | None:
        source = self._run.options.secrets.get(mount.id)
        if source is None:
            if mount.required:
                raise BuildError(f"secret {mount.id} not found (pass it with --secret id={mount.id},…)")
            return None
        secret = source if isinstance(source, SecretSource) else SecretSource(path=Path(source))
        try:
            return secret.read()
        except LaminaError as exc:
            raise BuildError(f"secret {mount.id}: {exc}") from exc

    def _bind(self, index: int, stack: contextlib.ExitStack, scratch: Path) -> Mount:
        from lamina.build.copy import copy_into
        from lamina.runtime.spec import Mount

        mount = self.mounts[index]
        if mount.from_:
            image, _ = self._image(index)
            tree = stack.enter_context(self._mounted(image))
            source = resolve_in_root(tree, mount.source or "/", follow_final=True)
            if not source.exists():
                raise BuildError(f"--mount source {mount.source} not found in {mount.from_}")
        else:
            selected = self._context_source(index)
            copy = Path(tempfile.mkdtemp(prefix="bind-", dir=scratch))
            one_file = len(selected) == 1 and not selected[0].is_dir
            try:
                copy_into(copy, selected, "/", src_root=self._run.context)
            except LaminaError as exc:
                raise BuildError(f"--mount source={mount.source}: {exc}") from exc
            source = copy / selected[0].name if one_file else copy
        return Mount.bind(str(source), mount.target, readonly=mount.readonly)

    @contextlib.contextmanager
    def _mounted(self, image: Image) -> Iterator[Path]:
        work = self._run.store.root / "mounts"
        work.mkdir(exist_ok=True)
        mount = self._run.snapshotter.prepare(self._run.layers.lowers(image), work)
        try:
            yield mount.root
        finally:
            mount.discard()

    @contextlib.contextmanager
    def _cache_dir(self, index: int, parent: Path) -> Iterator[Path]:
        mount = self.mounts[index]
        parent.mkdir(parents=True, exist_ok=True)
        base = cache_dir_name(mount.id)
        instance = 0
        while True:
            name = base if instance == 0 else f"{base}-{instance}"
            fd = os.open(parent / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if _lock(fd, mount.sharing):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            instance += 1
        try:
            path = parent / name
            if not path.is_dir():
                self._new_cache_dir(index, path)
            yield path
        finally:
            os.close(fd)

    def _new_cache_dir(self, index: int, path: Path) -> None:
        mount = self.mounts[index]
        fresh = Path(tempfile.mkdtemp(prefix=".new-", dir=path.parent))
        try:
            if mount.from_:
                image, _ = self._image(index)
                with self._mounted(image) as tree:
                    seed = resolve_in_root(tree, mount.source or "/", follow_final=True)
                    if seed.is_dir():
                        shutil.copytree(seed, fresh, symlinks=True, dirs_exist_ok=True)
            os.chown(fresh, mount.uid or 0, mount.gid or 0)
            os.chmod(fresh, 0o755 if mount.mode is None else mount.mode)
            os.rename(fresh, path)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise


def parse_run_mounts(instr: ins.Run, env: Mapping[str, str], lexer: Lexer, workdir: str) -> tuple[RunMount, ...]:
    """The RUN's ``--mount`` flags, their values expanded with the stage's ARG/ENV scope."""
    return parse_mounts(instr.mounts, workdir=workdir or "/", expand=lambda word: lexer.expand_word(word, env))


def debug_mounts(specs: list[dict[str, Any]], store_root: Path, context: Path | None,
                 ) -> tuple[tuple[Mount, ...], tuple[str, ...]]:
    """A failed RUN's mounts again, for ``lamina debug``; and the ones left out, as ``type target``.

    ``specs`` are the mounts' key inputs as the failed step recorded them.
    Caches are the store's cache directories themselves, tmpfs mounts are
    new, context binds show the context as it is now (read-only). Secrets
    (never stored) and binds from a stage or image are left out.
    """
    from lamina.runtime.spec import Mount

    mounts: list[Mount] = []
    left_out: list[str] = []
    for spec in specs:
        kind, target, readonly = str(spec.get("type")), str(spec.get("target", "")), bool(spec.get("readonly"))
        cache = store_root / CACHE_DIR / cache_dir_name(str(spec.get("id") or target))
        if kind == "cache" and cache.is_dir():
            mounts.append(Mount.bind(str(cache), target, readonly=readonly))
        elif kind == "tmpfs":
            size = spec.get("size")
            mounts.append(_tmpfs(RunMount("tmpfs", target, readonly=readonly,
                                          size=int(size) if size is not None else None)))
        elif kind == "bind" and not spec.get("from") and context is not None:
            try:
                source = resolve_in_root(context, str(spec.get("source") or "/"), follow_final=True)
            except LaminaError:
                source = None
            if source is not None and source.exists():
                mounts.append(Mount.bind(str(source), target, readonly=True))
            else:
                left_out.append(f"{kind} {target}")
        else:
            left_out.append(f"{kind} {target or spec.get('env', '')}")
    return tuple(mounts), tuple(left_out)


def cache_dir_name(ident: str) -> str:
    """A cache mount's directory name: a digest, so any id is a safe file name."""
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def _lock(fd: int, sharing: str) -> bool:
    """Take the lock ``sharing`` asks for; False only for ``private`` when the instance is busy."""
    if sharing == "shared":
        fcntl.flock(fd, fcntl.LOCK_SH)
        return True
    if sharing == "locked":
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _tmpfs(mount: RunMount) -> Mount:
    from lamina.runtime.spec import Mount

    options = ["nosuid", "nodev", "mode=1777"]
    if mount.size is not None:
        options.append(f"size={mount.size}")
    if mount.readonly:
        options.append("ro")
    return Mount(mount.target, "tmpfs", "tmpfs", tuple(options))


def _secret_file(directory: Path, number: int, mount: RunMount, value: bytes) -> Mount:
    from lamina.runtime.spec import Mount

    path = directory / f"secret-{number}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(value)
    os.chown(path, mount.uid or 0, mount.gid or 0)
    os.chmod(path, 0o400 if mount.mode is None else mount.mode)
    return Mount.bind(str(path), mount.target, readonly=True)


@contextlib.contextmanager
def _secrets_tmpfs(path: Path) -> Iterator[Path]:
    """A directory whose files live in memory only: a tmpfs in lamina's private mount namespace.

    Outside such a namespace (where a mount would outlive a killed process) a
    0700 directory under ``/dev/shm`` (else ``path`` itself) is the fallback.
    """
    from lamina.runtime.mountns import in_private_mount_namespace

    if not in_private_mount_namespace() and os.path.isdir("/dev/shm"):
        with tempfile.TemporaryDirectory(prefix="lamina-secrets-", dir="/dev/shm") as shm:
            os.chmod(shm, 0o700)
            yield Path(shm)
        return
    path.mkdir(mode=0o700)
    mounted = in_private_mount_namespace() and _mount_tmpfs(path)
    try:
        yield path
    finally:
        if mounted:
            _umount(path)
        shutil.rmtree(path, ignore_errors=True)


def _mount_tmpfs(path: Path) -> bool:
    try:
        syscalls.mount("tmpfs", path, "tmpfs", 0, f"mode=0700,size={_SECRETS_TMPFS_SIZE}")
    except OSError:
        return False
    return True


def _umount(path: Path) -> None:
    with contextlib.suppress(OSError):
        syscalls.umount(path, detach=True)


def _scratch_dir(store_root: Path) -> Path:
    tmp = store_root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=tmp))


def cleanup_stale(store_root: Path) -> int:
    """Remove the scratch directories of RUNs whose lamina process died; return how many."""
    tmp = store_root / "tmp"
    if not tmp.is_dir():
        return 0
    removed = 0
    for entry in os.scandir(tmp):
        if not entry.name.startswith(TMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        pid = entry.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


class _StubTracker:
    """Remembers which parts of the mount targets were missing, to remove what the runtime made."""

    def __init__(self, root: Path, targets: list[str]) -> None:
        self._stubs: list[Path] = []
        self._parents: dict[Path, tuple[int, int, frozenset[str]]] = {}
        for target in sorted(set(targets), key=lambda t: -t.count("/")):
            self._record(root, target)

    def _record(self, root: Path, target: str) -> None:
        host = resolve_in_root(root, target, follow_final=True)
        missing = []
        current = host
        while current != root and _lstat(current) is None:
            missing.append(current)
            current = current.parent
        if not missing:
            return
        self._stubs.extend(p for p in missing if p not in self._stubs)
        info = _lstat(current)
        if info is not None and stat.S_ISDIR(info.st_mode) and current not in self._parents:
            self._parents[current] = (info.st_atime_ns, info.st_mtime_ns, frozenset(os.listdir(current)))

    def cleanup(self) -> None:
        """Remove stubs still empty (deepest first), then give their parents back their times."""
        for path in sorted(self._stubs, key=lambda p: -len(p.parts)):
            info = _lstat(path)
            with contextlib.suppress(OSError):
                if info is not None and stat.S_ISDIR(info.st_mode):
                    os.rmdir(path)
                elif info is not None and stat.S_ISREG(info.st_mode) and info.st_size == 0:
                    os.unlink(path)
        for parent, (atime, mtime, names) in self._parents.items():
            with contextlib.suppress(OSError):
                if frozenset(os.listdir(parent)) == names:
                    os.utime(parent, ns=(atime, mtime), follow_symlinks=False)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


__all__ = ["CACHE_DIR", "Prepared", "RunMounts", "cache_dir_name", "cleanup_stale", "debug_mounts",
           "parse_run_mounts"]
