"""One-call functions over lamina: what the CLI uses and what programs import.

Here the real components are chosen (the overlay or copy snapshotter, runc,
the registry client); everything below receives them as parameters.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Concatenate, ParamSpec, TypeVar

from lamina.errors import ImageNotFound, LaminaError
from lamina.store.paths import default_root

if TYPE_CHECKING:  # loaded where used: a memoized rebuild needs no store, a push no build model
    from lamina.build import events
    from lamina.build.options import BuildOptions
    from lamina.store.db import Metadata
    from lamina.store.store import Store, StoredImage

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _leased(operation: str) -> Callable[[Callable[Concatenate[Store, _P], _R]], Callable[Concatenate[Store, _P], _R]]:
    """Hold a lease on the store (the first argument) while the call runs: prune then keeps away."""
    def wrap(fn: Callable[Concatenate[Store, _P], _R]) -> Callable[Concatenate[Store, _P], _R]:
        @functools.wraps(fn)
        def leased(store: Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            from lamina.store.lease import Lease

            with Lease(store.root, operation):
                return fn(store, *args, **kwargs)
        return leased
    return wrap


def open_store(root: Path | str | None = None) -> Store:
    from lamina.store.store import Store

    path = Path(root) if root else default_root()
    return Store(path, db=_memo_metadata.kept.pop(path.absolute(), None))


class _MemoMetadata(threading.local):
    """The metadata a memo lookup opened, kept for the store this thread opens next.

    SQLite checkpoints and deletes the WAL when a file's last connection closes (four syncs, and
    the next writer makes the WAL anew), which cost a memoized or incremental build 2-50 ms for
    nothing. Per thread, one store at a time: another thread's lookups never close what this one
    is using, and a program that builds in many stores keeps one connection open, not many.
    """

    def __init__(self) -> None:
        self.kept: dict[Path, Metadata] = {}


_memo_metadata = _MemoMetadata()


def build_memoized(root: Path | str | None, options: BuildOptions, *,
                   listener: events.Listener | None = None) -> str | None:
    """The image ID of ``options``' build when its memo still holds (see :mod:`lamina.build.memo`), else None.

    On a hit the build's output is replayed to ``listener`` and logged as a build is; nothing
    is parsed, hashed or mounted. On None, :func:`build` does the work (and writes the memo).
    """
    import time

    from lamina import __version__
    from lamina.build import memo
    from lamina.store.db import DB_FILE, Metadata

    started = time.monotonic()
    store_root = Path(root) if root else default_root()
    if options.no_cache or not (store_root / DB_FILE).is_file():
        return None
    key = memo.memo_key(options, __version__)
    if key is None:
        return None
    where = store_root.absolute()
    kept = _memo_metadata.kept
    db = kept.pop(where, None) or Metadata(store_root / DB_FILE)
    for other in kept.values():
        other.close()
    kept.clear()
    kept[where] = db  # left open: see _MemoMetadata
    found = memo.recall(db, key)
    if found is None:
        return None
    from lamina.build.buildlog import BuildLog

    log = BuildLog(store_root, about={"context": str(options.context), "tags": list(options.tags),
                                      "memo": True})
    memo.replay(found, log.tee(listener or _ignore), time.monotonic() - started)
    log.finish(image=str(found["image"]))
    db.memo_used(key, found["keys"], image=str(found["image"]), build_id=log.build_id)
    return str(found["image"])


def resolver(store: Store, *, platform: str | None = None):  # type: ignore[no-untyped-def]
    """FROM / COPY --from name → image: the local store first, else the registry."""

    def resolve(name: str, pull_always: bool) -> StoredImage:
        if not pull_always:
            found = store.lookup(name)
            if found is not None:
                return found
        try:
            return pull(store, name, platform=platform)
        except LaminaError as exc:
            if pull_always:
                found = store.lookup(name)
                if found is not None:
                    return found
            raise ImageNotFound(f"image {name} is not in the store and could not be pulled: {exc}") from exc

    return resolve


def _ignore(event: object) -> None:
    """The listener when the caller gives none."""


@_leased("build")
def build(store: Store, options: BuildOptions, *, listener: events.Listener | None = None,
          snapshotter: str = "auto", runtime: str = "auto") -> StoredImage:
    from lamina.build.builder import Builder

    env = _StepEnvironment(store, snapshotter, runtime)
    if _has_leftovers(store):  # a killed build's container may still run: recover even if all is cached
        env.setup()
    builder = Builder(store, _LazySnapshotter(env), _LazyExecutor(env), resolver(store, platform=options.platform),
                      listener or _ignore, setup=env.enter_namespace)
    return builder.build(options)


def _has_leftovers(store: Store) -> bool:
    """Whether runtime state or mount work dirs exist (a directory listing each; usually all empty)."""
    for name in ("runc", "crun", "mounts"):
        try:
            with os.scandir(store.root / name) as entries:
                if any(True for _ in entries):
                    return True
        except FileNotFoundError:
            continue
    return False


class _StepEnvironment:
    """A build's snapshotter and runc executor, set up when a step first needs one.

    A fully cached build mounts nothing, so it skips the private mount namespace,
    the overlayfs probe and the recovery of leftovers (all of which still happen
    before this process mounts anything). The builder calls :meth:`enter_namespace`
    before it starts threads: a mount namespace entered later would be one thread's
    only; the rest (probe, recovery, runc) still waits for a step that needs it.
    """

    def __init__(self, store: Store, snapshotter: str, runtime: str) -> None:
        import threading

        self._args = (store, snapshotter, runtime)
        self._lock = threading.Lock()
        self._ready: tuple[Any, Any] | None = None
        self._ns_tried = False

    def enter_namespace(self) -> None:
        """Try the private mount namespace once: a retry from a worker thread would be that thread's only."""
        if not self._ns_tried:
            from lamina.runtime.mountns import enter_private_mount_namespace

            self._ns_tried = True
            enter_private_mount_namespace()

    def setup(self) -> tuple[Any, Any]:
        with self._lock:
            if self._ready is None:
                store, name, runtime = self._args
                self.enter_namespace()
                chosen = _snapshotter(store, name)
                recover(store, chosen)
                executor = _executor(store, runtime)
                self._ready = (chosen, executor)
            return self._ready


class _LazySnapshotter:
    def __init__(self, env: _StepEnvironment) -> None:
        self._env = env

    @property
    def name(self) -> str:
        return str(self._env.setup()[0].name)

    def prepare(self, lowers: Sequence[Path], work_root: Path) -> Any:
        return self._env.setup()[0].prepare(lowers, work_root)

    def cleanup_stale(self, work_root: Path) -> int:
        return int(self._env.setup()[0].cleanup_stale(work_root))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env.setup()[0], name)


class _LazyExecutor:
    def __init__(self, env: _StepEnvironment) -> None:
        self._env = env

    def run(self, *args: Any, **kwargs: Any) -> int:
        return int(self._env.setup()[1].run(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env.setup()[1], name)


def _executor(store: Store, runtime: str) -> Any:
    """The runtime executor for ``runtime`` (``auto``: crun if it can run here, else runc), keeping its
    containers' state in the store; called inside the private mount namespace."""
    from lamina.runtime.runc import RuncExecutor, choose_runtime, state_dir

    binary = choose_runtime(runtime)
    return RuncExecutor(state_dir(store.root, binary), runtime=binary, bundle_dir=store.root / "tmp")


def recover(store: Store, snapshotter) -> None:  # type: ignore[no-untyped-def]
    """Clean up what a killed lamina process left: mounts' work dirs, containers, temp files.

    Cheap when there is nothing to do (a directory listing each), so every build and run starts
    with it; live processes' leftovers are never touched (their work dirs are locked).
    """
    from lamina.errors import RuntimeError_
    from lamina.runtime.runc import RUNTIMES, cleanup_stale, find_runtime

    for name in RUNTIMES:  # first: a dead build's container may still write to its upper dir
        state = store.root / name
        if state.is_dir() and any(state.iterdir()):
            try:
                binary = find_runtime(name)
            except RuntimeError_:
                continue  # that runtime is gone: nothing can stop its containers any more
            cleanup_stale(state, runtime=binary)
    snapshotter.cleanup_stale(store.root / "mounts")
    store.blobs.clean_tmp()
    tmp = store.root / "tmp"  # RUN --mount scratch dirs (bind copies); imported only when some exist
    if tmp.is_dir() and any(e.name.startswith("runmnt-") for e in os.scandir(tmp)):
        from lamina.build.mountsetup import cleanup_stale as cleanup_run_mounts

        cleanup_run_mounts(store.root)


def _snapshotter(store: Store, name: str):  # type: ignore[no-untyped-def]
    from lamina.snapshot.base import choose

    probe = store.root / "mounts"
    probe.mkdir(exist_ok=True)
    return choose(name, probe, store.root / "overlay-probe")  # the probe's result, kept for later builds


@_leased("pull")
def pull(store: Store, name: str, *, platform: str | None = None, progress=None,  # type: ignore[no-untyped-def]
         tls_verify: bool = True) -> StoredImage:
    """``tls_verify=False``: see :func:`registry_session` (and no mirrors: the registry was named)."""
    from lamina.oci.descriptor import Platform
    from lamina.oci.reference import Reference
    from lamina.transport.registry.pull import pull as _pull

    ref = Reference.parse(name)
    chosen = Platform.parse(platform) if platform else None
    if tls_verify:
        return _pull(store, ref, platform=chosen, progress=progress)
    with registry_session(ref.domain, tls_verify=False) as client:
        return _pull(store, ref, client=client, platform=chosen, progress=progress)


def registry_session(domain: str, *, tls_verify: bool = True, credentials: Any = None):  # type: ignore[no-untyped-def]
    """A registry client for ``domain``: the docker config's credentials (or ``credentials``, an
    object with ``get(registry)``), plain HTTP for loopback and insecure-registries.

    ``tls_verify=False`` (podman's and skopeo's ``--tls-verify=false``) is docker's
    insecure-registry rule: HTTPS without checking the certificate when the
    registry speaks TLS, else plain HTTP.
    """
    from lamina.transport.credentials import CredentialStore
    from lamina.transport.registry.client import RegistryClient, is_loopback

    creds = credentials if credentials is not None else CredentialStore()
    if tls_verify:
        if is_loopback(domain):  # always plain HTTP: the registry settings have nothing to add
            return RegistryClient(domain, credentials=creds)
        from lamina.transport import mirrors

        insecure = mirrors.load().is_insecure(domain)
        return RegistryClient(domain, credentials=creds, insecure=True if insecure else None)
    from lamina.transport.http import HttpTransport, Request, TransportError

    https = RegistryClient(domain, credentials=creds, insecure=False, transport=HttpTransport(verify=False))
    try:  # any HTTP answer means TLS works
        https.http.handle(Request("GET", https.url("/v2/"), timeout=10.0)).close()
        return https
    except TransportError:
        https.close()
        return RegistryClient(domain, credentials=creds, insecure=True)


def list_tags(repository: str, *, tls_verify: bool = True) -> list[str]:
    """The tags of ``repository`` (normalized, e.g. ``docker.io/library/busybox``) in its registry."""
    from lamina.oci.reference import Reference
    from lamina.transport.registry.pull import list_tags as _list_tags

    ref = Reference.parse(repository)
    with registry_session(ref.domain, tls_verify=tls_verify) as client:
        return _list_tags(client, ref.path)


def login(server: str, username: str, password: str, *, tls_verify: bool = True) -> str:
    """Check ``username``/``password`` with the registry (``GET /v2/``, answering its challenge,
    as docker does), then store them in the docker config; returns the registry's name."""
    from lamina.errors import AuthError
    from lamina.transport.credentials import Credential, CredentialStore, hostname
    from lamina.transport.registry.client import response_error

    domain = hostname(server)
    given = Credential(username, password)

    class _Given:
        def get(self, registry: str) -> Credential:
            return given

    what = f"logging in to {domain}"
    with registry_session(domain, tls_verify=tls_verify, credentials=_Given()) as client:
        response = client.request("GET", "/v2/", scope=(), what=what)
        response.close()
        if response.status_code in (401, 403):
            error = response_error(response, what)
            raise AuthError(f"{error} (incorrect username or password?)", status=response.status_code)
        if response.status_code >= 400 and response.status_code != 404:
            raise response_error(response, what)
    CredentialStore().login(server, username, password)
    return domain


@_leased("push")
def push(store: Store, name: str, destination: str | None = None, *, progress=None,  # type: ignore[no-untyped-def]
         tls_verify: bool = True):
    from lamina.transport.registry.push import push as _push

    image = store.resolve(name)
    from lamina.oci.reference import Reference

    ref = Reference.parse(destination or name)
    with registry_session(ref.domain, tls_verify=tls_verify) as client:  # honours insecure-registries
        result = _push(store, image, ref, client=client, progress=progress)
    store.db.add_repo_digest(str(image.manifest_digest), ref.repository, str(result.digest))
    return result


def tag(store: Store, source: str, target: str) -> None:
    from lamina.oci.reference import Reference

    ref = Reference.parse(target)  # parsed first: a bad target is the error even when source is missing too
    if ref.digest is not None:
        raise LaminaError(f"refusing to create a tag with a digest reference: {target}")
    image = store.resolve(source)
    store.tag(ref, image.manifest_digest)


@_leased("save")
def save(store: Store, names: Sequence[str], out: BinaryIO | Path, *, format: str = "docker-archive") -> None:
    from lamina.transport.archive import save as _save

    _save(store, names, out, format=format)  # type: ignore[arg-type]


@_leased("load")
def load(store: Store, src: BinaryIO | Path):  # type: ignore[no-untyped-def]
    from lamina.transport.archive import load as _load

    return _load(store, src)


@_leased("run")
def run(store: Store, name: str, args: Sequence[str] = (), *, env: Sequence[str] = (), network: str = "host",
        workdir: str | None = None, user: str | None = None, entrypoint: str | None = None,
        stdin: BinaryIO | None = None, output: Callable[[bytes], None] | None = None, tty: bool = False,
        snapshotter: str = "auto", runtime: str = "auto", errors: Callable[[bytes], None] | None = None) -> int:
    """Run an image's ENTRYPOINT/CMD (or ``args``) in a throw-away container; return its exit code.

    ``errors`` receives the container's stderr apart from ``output`` (as ``docker run`` keeps them).
    """
    from lamina.build.copy import mkdir_all
    from lamina.build.layers import LayerManager
    from lamina.build.steps import DEFAULT_PATH, home_of
    from lamina.build.users import resolve_user
    from lamina.errors import BuildError
    from lamina.runtime.mountns import enter_private_mount_namespace
    from lamina.runtime.spec import ProcessSpec
    enter_private_mount_namespace()
    stored = store.resolve(name)
    cfg = stored.image.config.config
    entry = (entrypoint,) if entrypoint else (() if entrypoint == "" else cfg.entrypoint)
    argv = tuple(entry) + (tuple(args) if args else (cfg.cmd if entrypoint is None else ()))
    if not argv:
        raise BuildError(f"no command specified for {name}")
    environment = dict(cfg.env_dict())
    for item in env:
        key, sep, value = item.partition("=")
        environment[key] = value if sep else __import__("os").environ.get(key, "")
    environment.setdefault("PATH", DEFAULT_PATH)
    lowers = LayerManager(store).lowers(stored.image)
    work = store.root / "mounts"
    work.mkdir(exist_ok=True)
    executor = _executor(store, runtime)
    chosen = _snapshotter(store, snapshotter)
    recover(store, chosen)
    with chosen.prepare(lowers, work) as mount:
        root = mount.root
        uid, gid, groups = resolve_user(root, user if user is not None else cfg.user)
        environment.setdefault("HOME", home_of(root, uid))
        cwd = workdir or cfg.working_dir or "/"
        mkdir_all(root, cwd, (0, 0))
        process = ProcessSpec(args=argv, env=tuple(f"{k}={v}" for k, v in environment.items()), cwd=cwd,
                              uid=uid, gid=gid, additional_gids=groups, terminal=tty)
        code = executor.run(root, process, network=network, stdin=stdin, output=output, errors=errors)
        mount.discard()
    return int(code)


def debug(store: Store, build: str | None = None, command: str | None = None, *, stdin: BinaryIO | None = None,
          output: Callable[[bytes], None] | None = None, tty: bool = False, snapshotter: str = "auto",
          runtime: str = "auto", warn: Callable[[str], None] | None = None) -> int:
    """Start ``/bin/sh`` (or ``sh -c command``) over the filesystem a failed RUN left; return its exit code.

    The container sees what the RUN saw (its parent layers, then what it wrote
    before failing) with the same env, workdir, user and network; what the
    shell changes is thrown away, so the kept state can be debugged again.
    ``build`` is a build ID (prefix); ``None`` is the newest build that kept a
    failed RUN. Its RUN mounts come back as
    :func:`~lamina.build.mountsetup.debug_mounts` says (caches, tmpfs, context
    binds); ``warn`` is told which could not.
    """
    from lamina.build.buildlog import builds, find_build, load_debug
    from lamina.build.copy import mkdir_all
    from lamina.build.mountsetup import debug_mounts
    from lamina.build.steps import HOSTNAME, home_of
    from lamina.build.users import resolve_user
    from lamina.errors import BuildError
    from lamina.runtime.mountns import enter_private_mount_namespace
    from lamina.runtime.spec import ProcessSpec

    if build is None:
        kept = [b for b in builds(store.root) if b.debug]
        if not kept:
            raise BuildError("no build kept a failed RUN to debug (lamina build keeps one when a RUN fails)")
        info = kept[0]
    else:
        info = find_build(store.root, build)
    state = load_debug(store.root, info.build_id)
    lowers = [Path(state["upper"]), *(Path(p) for p in state["lowers"])]
    if any(not p.is_dir() for p in lowers):
        raise BuildError(f"build {info.build_id}: the failed step's layers are no longer in the store; rebuild")
    process = state["process"]
    context = state.get("context")
    mounts, left_out = debug_mounts(list(state.get("mounts") or []), store.root, Path(context) if context else None)
    if left_out and warn is not None:
        warn(f"not re-created (secrets are never kept; binds from stages or images): {', '.join(left_out)}")
    enter_private_mount_namespace()
    chosen = _snapshotter(store, snapshotter)
    recover(store, chosen)
    executor = _executor(store, runtime)
    work = store.root / "mounts"
    with chosen.prepare(lowers, work) as mount:
        root = mount.root
        uid, gid, groups = resolve_user(root, process["user"])
        env = list(process["env"])
        if not any(e.startswith("HOME=") for e in env):
            env.append(f"HOME={home_of(root, uid)}")
        mkdir_all(root, process["cwd"], (0, 0))
        argv = ("/bin/sh", "-c", command) if command else ("/bin/sh",)
        spec = ProcessSpec(args=argv, env=tuple(env), cwd=process["cwd"], uid=uid, gid=gid,
                           additional_gids=groups, terminal=tty)
        code = executor.run(root, spec, network=process["network"], mounts=mounts, stdin=stdin, output=output,
                            hostname=HOSTNAME)
        mount.discard()
    return int(code)
