"""One-call functions over lamina: what the CLI uses and what programs import.

Here the real components are chosen (the overlay or copy snapshotter, runc,
the registry client); everything below receives them as parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from lamina.build import events
from lamina.build.options import BuildOptions
from lamina.errors import ImageNotFound, LaminaError
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage, default_root


def open_store(root: Path | str | None = None) -> Store:
    return Store(Path(root) if root else default_root())


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


def build(store: Store, options: BuildOptions, *, listener: events.Listener = events.ignore,
          snapshotter: str = "auto", runtime: str = "runc") -> StoredImage:
    from lamina.build.builder import Builder
    from lamina.runtime.mountns import enter_private_mount_namespace
    from lamina.runtime.runc import RuncExecutor

    enter_private_mount_namespace()
    chosen = _snapshotter(store, snapshotter)
    recover(store, chosen, runtime)
    executor = RuncExecutor(store.root / "runc", runtime=runtime, bundle_dir=store.root / "tmp")
    builder = Builder(store, chosen, executor, resolver(store, platform=options.platform), listener)
    return builder.build(options)


def recover(store: Store, snapshotter, runtime: str = "runc") -> None:  # type: ignore[no-untyped-def]
    """Clean up what a killed lamina process left: mounts' work dirs, runc containers, temp files.

    Cheap when there is nothing to do (a directory listing each), so every build and run starts
    with it; live processes' leftovers are never touched (their work dirs are locked).
    """
    from lamina.runtime.runc import cleanup_stale

    snapshotter.cleanup_stale(store.root / "mounts")
    state = store.root / "runc"
    if state.is_dir() and any(state.iterdir()):
        cleanup_stale(state, runtime=runtime)
    store.blobs.clean_tmp()


def _snapshotter(store: Store, name: str):  # type: ignore[no-untyped-def]
    from lamina.snapshot.base import choose

    probe = store.root / "mounts"
    probe.mkdir(exist_ok=True)
    return choose(name, probe)


def pull(store: Store, name: str, *, platform: str | None = None, progress=None) -> StoredImage:  # type: ignore[no-untyped-def]
    from lamina.oci.descriptor import Platform
    from lamina.transport.registry.pull import pull as _pull

    return _pull(store, Reference.parse(name), platform=Platform.parse(platform) if platform else None,
                 progress=progress)


def push(store: Store, name: str, destination: str | None = None, *, progress=None):  # type: ignore[no-untyped-def]
    from lamina.transport.registry.push import push as _push

    image = store.resolve(name)
    ref = Reference.parse(destination or name)
    return _push(store, image, ref, progress=progress)


def tag(store: Store, source: str, target: str) -> None:
    image = store.resolve(source)
    store.tag(Reference.parse(target), image.manifest_digest)


def save(store: Store, names: Sequence[str], out: BinaryIO | Path, *, format: str = "docker-archive") -> None:
    from lamina.transport.archive import save as _save

    _save(store, names, out, format=format)  # type: ignore[arg-type]


def load(store: Store, src: BinaryIO | Path):  # type: ignore[no-untyped-def]
    from lamina.transport.archive import load as _load

    return _load(store, src)


def run(store: Store, name: str, args: Sequence[str] = (), *, env: Sequence[str] = (), network: str = "host",
        workdir: str | None = None, user: str | None = None, entrypoint: str | None = None,
        stdin: BinaryIO | None = None, output: Callable[[bytes], None] | None = None, tty: bool = False,
        snapshotter: str = "auto", runtime: str = "runc") -> int:
    """Run an image's ENTRYPOINT/CMD (or ``args``) in a throw-away container; return its exit code."""
    from lamina.build.copy import mkdir_all
    from lamina.build.layers import LayerManager
    from lamina.build.steps import DEFAULT_PATH, home_of
    from lamina.build.users import resolve_user
    from lamina.errors import BuildError
    from lamina.runtime.mountns import enter_private_mount_namespace
    from lamina.runtime.runc import RuncExecutor
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
    executor = RuncExecutor(store.root / "runc", runtime=runtime, bundle_dir=store.root / "tmp")
    chosen = _snapshotter(store, snapshotter)
    recover(store, chosen, runtime)
    with chosen.prepare(lowers, work) as mount:
        root = mount.root
        uid, gid, groups = resolve_user(root, user if user is not None else cfg.user)
        environment.setdefault("HOME", home_of(root, uid))
        cwd = workdir or cfg.working_dir or "/"
        mkdir_all(root, cwd, (0, 0))
        process = ProcessSpec(args=argv, env=tuple(f"{k}={v}" for k, v in environment.items()), cwd=cwd,
                              uid=uid, gid=gid, additional_gids=groups, terminal=tty)
        code = executor.run(root, process, network=network, stdin=stdin, output=output)
        mount.discard()
    return code
