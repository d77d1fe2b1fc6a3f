"""The build orchestrator: Dockerfile → stages → cached steps → an image in the store.

The stages the target needs are built in dependency order
(:mod:`lamina.build.schedule`); stages the target does not need are never
built, and independent ones build at once on a thread each, as BuildKit does.
Each instruction gets a chained cache key
(:mod:`lamina.build.cachekey`); a hit reuses the recorded layer and history
entry, a miss runs the step over an overlay of the parent's snapshots and
commits the upper dir as a layer. A record is written as soon as its step
completes, so a failed build resumes at the step that failed.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import field, replace
from typing import TYPE_CHECKING, Any

from lamina.build import cachekey, events, schedule
from lamina.build.buildlog import BuildLog
from lamina.build.context import SourceRoot
from lamina.build.dockerignore import load_ignore
from lamina.build.explain import StepInputs
from lamina.build.layers import LayerManager
from lamina.build.memo import MemoRecorder, memo_key
from lamina.build.options import BuildOptions
from lamina.build.stagepool import Cancelled, StageOrder, run_pool
from lamina.build.stagerun import StageRun
from lamina.build.stepkeys import PrefetchedStatCache, StatCacheAdapter
from lamina.build.steps import PROXY_ARGS
from lamina.dockerfile.shell import Lexer
from lamina.dockerfile.stages import Dockerfile, Stage, find_stage, parse_dockerfile
from lamina.errors import DockerfileError, LaminaError
from lamina.image.image import Image, scratch, with_created
from lamina.model import model
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference
from lamina.store.keylock import KeyLocks
from lamina.store.store import Store, StoredImage

if TYPE_CHECKING:  # the real ones come from api; their modules load at the first step that mounts
    from lamina.runtime.executor import Executor
    from lamina.snapshot.base import Snapshotter
    from lamina.transport.cacheio import ImportedCache  # loaded only for --cache-from/--cache-to

Resolver = Callable[[str, bool], StoredImage]


@model(frozen=False)
class StageResult:
    image: Image
    key: str


@model(frozen=False)
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
    # --cache-from records (looked up after the store's) and the keys this build reached (--cache-to)
    imported: ImportedCache | None = None
    reached: dict[str, None] = field(default_factory=dict)
    # parallel stages (see Builder._build_stages): their results, events and a stop signal
    cancelled: threading.Event = field(default_factory=threading.Event)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _building: dict[int, threading.Event] = field(default_factory=dict)
    _order: StageOrder | None = None
    _resolving: dict[str, threading.Lock] = field(default_factory=dict)
    _bases: dict[str, tuple[Image, str]] = field(default_factory=dict)
    listener: events.Listener = events.ignore  # the caller's; ``emit`` is :meth:`event` once prepared
    # explaining misses (build/explain.py), history timings, logs and debug state (build/buildlog.py)
    log: BuildLog | None = None
    lineage: list[tuple[str, str, str, str]] = field(default_factory=list)  # (file, position, parent, key)
    built: dict[str, tuple[int, bool]] = field(default_factory=dict)  # key → (step number, ran here)
    timings: dict[int, dict[int, tuple[float, bool]]] = field(default_factory=dict)  # stage → history pos → …
    _identity: str = ""
    _key_locks: KeyLocks | None = None
    memo: MemoRecorder | None = None  # what this build's memo will watch (build/memo.py)

    @property
    def context(self) -> SourceRoot:
        with self._lock:
            if self._context is None:
                ctx = self.options.context.absolute()  # absolute stat cache paths: see _PrefetchedStatCache
                seen = self.memo.seen if self.memo is not None else None
                self._context = SourceRoot.context(ctx, load_ignore(ctx, self.options.dockerfile), seen)
            return self._context

    def now(self) -> str:
        return timestamp(self.options.timestamp)

    def stage_result(self, index: int) -> StageResult:
        """The stage's result, building it here unless done or under way in another thread."""
        with self._lock:
            if index in self.results:
                return self.results[index]
            pending = self._building.get(index)
            mine = pending is None
            if pending is None:
                pending = self._building[index] = threading.Event()
        if not mine:
            pending.wait()
            with self._lock:
                if index in self.results:
                    return self.results[index]
            raise Cancelled(f"stage {index} did not complete")
        stage = self.dockerfile.stages[index]
        try:
            result = StageRun(self, stage).build()
            with self._lock:
                self.results[index] = result
        finally:
            with self._lock:
                del self._building[index]
                if self._order is not None:
                    self._order.finished(_label(stage))
            pending.set()
        return result

    def event(self, event: events.Event) -> None:
        """Every event of the build passes here: counted, ordered, and a stop point on cancel."""
        if isinstance(event, events.StepStarted | events.StepOutput) and self.cancelled.is_set():
            raise Cancelled("cancelled: another stage failed")
        with self._lock:
            if self.memo is not None:
                self.memo.observe(event)
            if isinstance(event, events.StepCached):
                self.cached_steps += 1
            if self._order is not None:
                self._order(event)
            else:
                self.listener(event)

    def base_image(self, name: str) -> tuple[Image, str]:
        """An image by name for FROM / COPY --from: its value and the root of its key chain."""
        if name == "scratch":
            return scratch(), cachekey.base_key(None)
        with self._lock:  # once per name and build, even when two stages want it at once
            lock = self._resolving.setdefault(name, threading.Lock())
        with lock:
            if name not in self._bases:
                stored = self.resolver(name, self.options.pull)
                self._bases[name] = (stored.image, cachekey.base_key(str(stored.manifest_digest)))
                if self.memo is not None:
                    self.memo.resolved(name, str(stored.manifest_digest), self.store.db)
            return self._bases[name]

    def no_memo(self, reason: str) -> None:
        """This build reads something a memo cannot watch (a URL, a Git ref): it gets none."""
        if self.memo is not None:
            self.memo.refuse(reason)

    def cache_get(self, key: str) -> dict[str, Any] | None:
        if self.options.no_cache:
            return None
        self.reached[key] = None
        raw = self.store.db.cache_get(key, touch=False)  # touched all at once when the build ends
        if raw:
            return json.loads(raw)  # type: ignore[no-any-return]
        record = self.imported.get(key) if self.imported is not None else None
        if record is not None:  # kept locally: the next build hits without the import
            self.store.db.cache_put(key, json.dumps(record, sort_keys=True))
        return record

    def cache_put(self, key: str, record: Mapping[str, Any]) -> None:
        self.reached[key] = None
        self.store.db.cache_put(key, json.dumps(record, sort_keys=True))

    # concurrent builds of the same steps (other threads, other processes): each step runs once
    def step_lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold around "miss → run → record": a build missing the same step waits, then hits."""
        if self.options.no_cache:
            return contextlib.nullcontext()
        with self._lock:
            if self._key_locks is None:
                self._key_locks = KeyLocks(self.store.root / "locks")
        return self._key_locks.hold(key)

    def cache_claim(self, key: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Record a metadata step unless another build just did; the record that holds (its ``created``)."""
        self.reached[key] = None
        if self.options.no_cache:
            self.cache_put(key, record)
            return dict(record)
        return json.loads(self.store.db.cache_put_first(key, json.dumps(record, sort_keys=True)))  # type: ignore[no-any-return]

    @property
    def identity(self) -> str:
        """Which Dockerfile this is, for finding the earlier version of a step that missed."""
        if not self._identity:
            context = self.options.context.resolve()
            path = self.options.dockerfile
            where = "-" if self.options.dockerfile_text is not None else str((path or context / "Dockerfile").resolve())
            self._identity = f"{context}\0{where}"
        return self._identity

    def previous_inputs(self, parent: str, position: str) -> tuple[str, StepInputs | None] | None:
        """The key and inputs of this step's earlier version (same parent, else same position)."""
        key = self.store.db.lineage_find(self.identity, parent, position)
        if key is None:
            return None
        raw = self.store.db.cache_peek(key)
        try:
            doc = json.loads(raw) if raw else {}
            return key, StepInputs.from_json(doc["inputs"]) if "inputs" in doc else None
        except (ValueError, KeyError, TypeError, IndexError):
            return key, None

    def flush_lineage(self) -> None:
        with self._lock:
            rows, self.lineage = self.lineage, []
        if rows:
            self.store.db.lineage_put_many(rows)

    def fetch_cached_blob(self, digest: Digest) -> bool:
        """Bring a cache hit's layer blob in from --cache-from; False (a warning) when that fails."""
        if self.imported is None:
            return False
        try:
            self.imported.fetch(digest)
        except LaminaError as exc:
            self.emit(events.Warning_(f"fetching cached layer {digest}: {exc}"))
            return False
        return True


def timestamp(epoch: int | None = None) -> str:
    """RFC 3339 UTC with nanoseconds, as Go writes it."""
    if epoch is not None:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


class Builder:
    """Builds images; the snapshotter, executor and image resolver come in from the caller."""

    def __init__(self, store: Store, snapshotter: Snapshotter, executor: Executor, resolver: Resolver,
                 listener: events.Listener = events.ignore, *, setup: Callable[[], object] | None = None) -> None:
        """``setup`` runs before the stage threads start (the private mount namespace)."""
        self.store = store
        self.snapshotter = snapshotter
        self.executor = executor
        self.resolver = resolver
        self.emit = listener
        self.setup = setup

    def build(self, options: BuildOptions) -> StoredImage:
        """Build, keeping every step's output under ``STORE/logs/<build-id>/`` (lamina logs)."""
        started = time.monotonic()
        log = BuildLog(self.store.root, about={"context": str(options.context), "tags": list(options.tags)})
        listener, self.emit = self.emit, log.tee(self.emit)
        try:
            stored = self._build_logged(options, log, started)
        except BaseException as exc:
            log.finish(exc)
            raise
        finally:
            self.emit = listener
        log.finish(image=str(stored.id))
        return stored

    def _build_logged(self, options: BuildOptions, log: BuildLog, started: float) -> StoredImage:
        run = self._prepare(options)
        run.log = log
        if options.cache_from and not options.no_cache:
            from lamina.transport.cacheio import import_caches

            run.imported = import_caches(self.store, options.cache_from, lambda m: self.emit(events.Warning_(m)))
        try:
            return self._build(run, started)
        except BaseException:
            with contextlib.suppress(OSError):
                run.layers.sync()  # what the failed build cached, for the next one to resume from
            raise
        finally:
            if run.reached:
                self.store.db.cache_touch(run.reached)
            run.flush_lineage()
            if run.imported is not None:
                run.imported.close()

    def _build(self, run: BuildRun, started: float) -> StoredImage:
        options = run.options
        target = find_stage(run.dockerfile, options.target) if options.target else len(run.dockerfile.stages) - 1
        result = self._build_stages(run, target)
        self._warn_unused(run)
        image = result.image
        if options.labels:
            cfg = image.config.config
            image = replace(image, config=replace(image.config, config=replace(
                cfg, labels={**cfg.labels, **options.labels})))
        created = image.config.history[-1].created if image.config.history else run.now()
        run.layers.sync()  # the image's layers are on disk before the image is
        stored = self.store.put_image(with_created(image, created), oci=options.oci)
        _record_steps(run, target, str(stored.id))
        tags, tag_names = [], []
        for name in options.tags:
            ref = Reference.parse(name)
            self.store.tag(ref, stored.manifest_digest)
            tags.append(ref.familiar)
            tag_names.append(str(ref))
        for spec in options.cache_to:
            from lamina.transport.cacheio import export_cache, select_records

            records = {k: json.loads(r) for k in run.reached if (r := self.store.db.cache_get(k, touch=False))}
            export_cache(self.store, spec, select_records(records, stored.image, spec.mode))
        self.emit(events.BuildDone(stored.id.short, tuple(tags), run.cached_steps, run.total_steps,
                                   time.monotonic() - started))
        if run.memo is not None:
            run.memo.write(self.store.db, manifest=str(stored.manifest_digest), image_id=str(stored.id),
                           short_id=stored.id.short, tags=tags, tag_names=tag_names, cache_keys=run.reached)
        return stored

    def _prepare(self, options: BuildOptions) -> BuildRun:
        from lamina import __version__

        key = memo_key(options, __version__)
        memo = MemoRecorder(key) if key is not None else None  # before anything is read: see memo.RACY_NS
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
                       self.resolver, self.emit, stat_cache=PrefetchedStatCache(self.store.db, options.context.absolute()))
        run.listener, run.emit = self.emit, run.event
        if memo is not None:
            run.memo = memo
            ctx = options.context.absolute()
            ignores = [ctx / ".dockerignore"]
            if options.dockerfile is not None:
                ignores.append(options.dockerfile.absolute().parent / (options.dockerfile.name + ".dockerignore"))
            memo.watch([path.absolute(), *ignores])
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

    def _build_stages(self, run: BuildRun, target: int) -> StageResult:
        """The needed stages in dependency order; independent ones at once on a thread pool."""
        graph = schedule.needed(run.dockerfile, target, lambda stage: _from_image(run, stage))
        if not schedule.parallel(graph):
            for index in graph:
                run.stage_result(index)
            return run.stage_result(target)
        if self.setup is not None:
            self.setup()  # the private mount namespace must exist before the worker threads do
        run._order = StageOrder(run.listener)
        try:
            run_pool(run, graph)
        finally:
            with run._lock:
                run._order.flush()
                run._order = None
        return run.stage_result(target)

    def _warn_unused(self, run: BuildRun) -> None:
        unused = sorted(set(run.options.build_args) - run.used_args - PROXY_ARGS)
        if unused:
            run.emit(events.Warning_(f"One or more build-args {unused} were not consumed"))


def _record_steps(run: BuildRun, target: int, image_id: str) -> None:
    """How long each history entry of the image took and whether it was cached (lamina history)."""
    steps = [(pos, seconds, cached) for pos, (seconds, cached) in sorted(run.timings.get(target, {}).items())]
    known = run.store.db.image_steps(image_id)
    if {pos: (seconds, cached) for pos, (seconds, cached, _) in known.items()} != {p: (s, c) for p, s, c in steps}:
        run.store.db.image_steps_put(image_id, run.log.build_id if run.log else "", steps)


def _label(stage: Stage) -> str:
    return stage.name or str(stage.index)


def _from_image(run: BuildRun, stage: Stage) -> str:
    """The FROM image with global ARGs expanded (as ``StageRun`` does), for the stage graph."""
    try:
        return run.lexer.expand_word(stage.from_.image, run.global_args)
    except DockerfileError:
        return stage.from_.image  # the stage reports it with its line when it runs


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
