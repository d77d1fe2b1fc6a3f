"""The build orchestrator: Dockerfile → stages → cached steps → an image in the store.

Stages are built on demand from the target down (so stages the target does
not need are never built). Each instruction gets a chained cache key
(:mod:`lamina.build.cachekey`); a hit reuses the recorded layer and history
entry, a miss runs the step over an overlay of the parent's snapshots and
commits the upper dir as a layer. A record is written as soon as its step
completes, so a failed build resumes at the step that failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lamina.build import cachekey, events
from lamina.build.context import SourceRoot
from lamina.build.dockerignore import load_ignore
from lamina.build.layers import LayerManager
from lamina.build.options import BuildOptions
from lamina.build.stagerun import StageRun
from lamina.build.stepkeys import StatCacheAdapter
from lamina.build.steps import PROXY_ARGS
from lamina.dockerfile.shell import Lexer
from lamina.dockerfile.stages import Dockerfile, find_stage, parse_dockerfile
from lamina.errors import DockerfileError
from lamina.image.image import Image, scratch, with_created
from lamina.oci.reference import Reference
from lamina.runtime.executor import Executor
from lamina.snapshot.base import Snapshotter
from lamina.store.store import Store, StoredImage

Resolver = Callable[[str, bool], StoredImage]



@dataclass(slots=True)
class StageResult:
    image: Image
    key: str


@dataclass(slots=True)
class BuildRun:
    """The state of one build: shared by its stages."""

    options: BuildOptions
    dockerfile: Dockerfile
    file: str
    lexer: Lexer
    global_args: dict[str, str]
    store: Store
    layers: LayerManager
    snapshotter: Snapshotter
    executor: Executor
    resolver: Resolver
    emit: events.Listener
    results: dict[int, StageResult] = field(default_factory=dict)
    used_args: set[str] = field(default_factory=set)
    cached_steps: int = 0
    total_steps: int = 0
    _context: SourceRoot | None = None
    stat_cache: StatCacheAdapter | None = None

    @property
    def context(self) -> SourceRoot:
        if self._context is None:
            ctx = self.options.context
            self._context = SourceRoot.context(ctx, load_ignore(ctx, self.options.dockerfile))
        return self._context

    def now(self) -> str:
        return timestamp(self.options.timestamp)

    def stage_result(self, index: int) -> StageResult:
        if index not in self.results:
            self.results[index] = StageRun(self, self.dockerfile.stages[index]).build()
        return self.results[index]

    def base_image(self, name: str) -> tuple[Image, str]:
        """An image by name for FROM / COPY --from: its value and the root of its key chain."""
        if name == "scratch":
            return scratch(), cachekey.base_key(None)
        stored = self.resolver(name, self.options.pull)
        return stored.image, cachekey.base_key(str(stored.manifest_digest))

    def cache_get(self, key: str) -> dict[str, Any] | None:
        if self.options.no_cache:
            return None
        raw = self.store.db.cache_get(key)
        return json.loads(raw) if raw else None

    def cache_put(self, key: str, record: Mapping[str, Any]) -> None:
        self.store.db.cache_put(key, json.dumps(record, sort_keys=True))


def timestamp(epoch: int | None = None) -> str:
    """RFC 3339 UTC with nanoseconds, as Go writes it."""
    if epoch is not None:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


class Builder:
    """Builds images; the snapshotter, executor and image resolver come in from the caller."""

    def __init__(self, store: Store, snapshotter: Snapshotter, executor: Executor, resolver: Resolver,
                 listener: events.Listener = events.ignore) -> None:
        self.store = store
        self.snapshotter = snapshotter
        self.executor = executor
        self.resolver = resolver
        self.emit = listener

    def build(self, options: BuildOptions) -> StoredImage:
        started = time.monotonic()
        run = self._prepare(options)
        target = find_stage(run.dockerfile, options.target) if options.target else len(run.dockerfile.stages) - 1
        result = run.stage_result(target)
        self._warn_unused(run)
        image = result.image
        if options.labels:
            cfg = image.config.config
            image = replace(image, config=replace(image.config, config=replace(
                cfg, labels={**cfg.labels, **options.labels})))
        created = image.config.history[-1].created if image.config.history else run.now()
        stored = self.store.put_image(with_created(image, created), oci=options.oci)
        tags = []
        for name in options.tags:
            ref = Reference.parse(name)
            self.store.tag(ref, stored.manifest_digest)
            tags.append(ref.familiar)
        self.emit(events.BuildDone(stored.id.short, tuple(tags), run.cached_steps, run.total_steps,
                                   time.monotonic() - started))
        return stored

    def _prepare(self, options: BuildOptions) -> BuildRun:
        path = options.dockerfile or options.context / "Dockerfile"
        file = path.name if options.dockerfile_text is None else "Dockerfile"
        if options.dockerfile_text is not None:
            text: str | bytes = options.dockerfile_text
        else:
            try:
                text = path.read_bytes()
            except OSError as exc:
                raise DockerfileError(f"cannot read Dockerfile: {exc.strerror}", file=str(path)) from None
        df = parse_dockerfile(text, file)
        lexer = Lexer(df.directives.escape)
        layers = LayerManager(self.store, compression=options.compression, oci=options.oci,
                              clamp_mtime=options.timestamp)
        run = BuildRun(options, df, file, lexer, {}, self.store, layers, self.snapshotter, self.executor,
                       self.resolver, self.emit, stat_cache=StatCacheAdapter(self.store.db))
        run.global_args = self._global_args(run)
        run.total_steps = sum(1 + len(s.instructions) for s in df.stages)
        return run

    def _global_args(self, run: BuildRun) -> dict[str, str]:
        scope: dict[str, str] = platform_args()
        for instr in run.dockerfile.global_args:
            for name, default in instr.pairs:
                run.used_args.add(name)
                if name in run.options.build_args:
                    scope[name] = run.options.build_args[name]
                elif default is not None:
                    try:
                        scope[name] = run.lexer.expand_word(default, scope)
                    except DockerfileError as exc:
                        raise exc.located(run.file, instr.line) from None
        return scope

    def _warn_unused(self, run: BuildRun) -> None:
        unused = sorted(set(run.options.build_args) - run.used_args - PROXY_ARGS)
        if unused:
            self.emit(events.Warning_(f"One or more build-args {unused} were not consumed"))


def platform_args() -> dict[str, str]:
    """BuildKit's automatic platform ARGs (we build for the host platform)."""
    from lamina.oci.descriptor import Platform

    p = Platform.host()
    plat = str(p)
    values = {"PLATFORM": plat, "OS": p.os, "ARCH": p.architecture, "VARIANT": p.variant or ""}
    out = {}
    for prefix in ("TARGET", "BUILD"):
        for suffix, value in values.items():
            out[prefix + suffix] = value
    return out


__all__ = ["BuildRun", "Builder", "StageResult", "timestamp"]
