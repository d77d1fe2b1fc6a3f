"""Building one stage: its base, then each instruction as a cached step."""

from __future__ import annotations

import contextlib
import json
import time
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.build import cachekey, events, explain, metadata, speculate, steps
from lamina.build.context import SourceRoot, checksum, select
from lamina.build.stepkeys import canonical_instruction, history_text
from lamina.dockerfile import instructions as ins
from lamina.dockerfile.expand import expand_tracking
from lamina.dockerfile.parser import parse
from lamina.dockerfile.stages import Stage, stage_index
from lamina.errors import BuildError, DockerfileError, LaminaError
from lamina.image.image import Image, Layer, add_history, append_layer, with_container_config, with_created
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest

if TYPE_CHECKING:
    from lamina.build.builder import BuildRun, StageResult


class StageRun:
    """The mutable state of one stage while it builds: image so far, key chain, ARGs."""

    def __init__(self, run: BuildRun, stage: Stage) -> None:
        self.run = run
        self.stage = stage
        self.label = stage.name or str(stage.index)
        self.no_cache = run.options.no_cache or self.label in run.options.no_cache_filter
        self.image: Image
        self.key = ""
        self.args: dict[str, str] = {}
        self.cmd_set = False
        self._source, self._used = "", frozenset[str]()
        self._ran_for: float | None = None
        self._sources: tuple[list[Any], explain.RecordingStatCache] | None = None
        # the speculative COPY (lamina.build.speculate): this step's place, the layers of COPYs after it
        # in the making (by place), and whether this step, should it run, may start some
        self._position = 0
        self._speculate = False
        self._speculations: dict[int, speculate.Speculation] = {}
        previous = run.dockerfile.stages[: stage.index]
        self.number = sum(1 + len(s.instructions) for s in previous) + 1

    # the cache as this stage sees it: none at all with --no-cache-filter naming it
    def _cache_get(self, key: str) -> dict[str, Any] | None:
        self._looked_up()
        return None if self.no_cache else self.run.cache_get(key)

    def _cache_claim(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        self._looked_up()
        if self.no_cache:
            self.run.cache_put(key, record)
            return dict(record)
        return self.run.cache_claim(key, record)

    def _looked_up(self) -> None:
        """This step is one a rebuild finds in the cache (what a build's memo replays as cached)."""
        if self.run.memo is not None:
            self.run.memo.keyed(self.label, self.number)

    def _step_lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.no_cache else self.run.step_lock(key)

    def where(self, line: int) -> str:
        return f"{self.run.file}:{line}"

    # the stage ----------------------------------------------------------------
    def build(self) -> StageResult:
        from lamina.build.builder import StageResult

        self._from()
        instructions = self.stage.instructions
        try:
            for instr in self._triggers():
                self._step(instr, trigger=True)
            for position, instr in enumerate(instructions, 1):
                self.number += 1
                self._position = position
                self._step(instr, last=position == len(instructions))
        finally:
            self._drop_speculations(len(instructions) + 1)
        if self.run.stat_cache is not None:
            self.run.stat_cache.flush()
        return StageResult(self.image, self.key)

    def _from(self) -> None:
        run = self.run
        frm = self.stage.from_
        try:
            expanded, _ = expand_tracking(frm, run.global_args, run.lexer, file=run.file)
        except DockerfileError as exc:
            raise exc.located(run.file, frm.line) from None
        assert isinstance(expanded, ins.From)
        name = expanded.image
        if not name:  # BuildKit's check and wording, before any lookup
            raise DockerfileError(f"base name ({frm.image}) should not be blank", file=run.file, line=frm.line)
        run.emit(events.StepStarted(self.label, self.number, run.total_steps, frm.original))
        started = time.monotonic()
        index = self._stage_named(name)
        try:
            if index is not None:
                base = run.stage_result(index)
                self.image, self.key = base.image, base.key
                run.timings[self.stage.index] = dict(run.timings.get(index, {}))  # lamina history
            else:
                self.image, self.key = run.base_image(name)
        except LaminaError as exc:
            if isinstance(exc, DockerfileError):
                raise
            raise BuildError(f"{self.where(frm.line)}: FROM {name}: {exc}") from exc
        cfg = self.image.config.config
        if "PATH" not in cfg.env_dict():  # BuildKit gives every image a PATH
            self.image = with_container_config(self.image, cfg.with_env("PATH", steps.DEFAULT_PATH))
        run.emit(events.StepDone(self.label, self.number, _image_id(self.image), time.monotonic() - started, False))

    def _stage_named(self, name: str) -> int | None:
        wanted = name.lower()
        for stage in reversed(self.run.dockerfile.stages[: self.stage.index]):  # the last of a name wins
            if stage.name == wanted:
                return stage.index
        return None

    def _triggers(self) -> list[ins.Instruction]:
        """ONBUILD triggers of the base run first; the new image does not inherit them."""
        cfg = self.image.config.config
        if not cfg.on_build:
            return []
        self.image = with_container_config(self.image, replace(cfg, on_build=()))
        out = []
        for text in cfg.on_build:
            try:
                for node in parse(text, self.run.file).nodes:
                    out.append(ins.to_instruction(node, self.run.file))
            except DockerfileError as exc:
                raise DockerfileError(f"ONBUILD trigger {text!r}: {exc.message}", file=self.run.file,
                                      line=self.stage.line) from None
        return out

    # one step -------------------------------------------------------------------
    def _step(self, instr: ins.Instruction, *, trigger: bool = False, last: bool = False) -> None:
        run = self.run
        layers = len(self.image.layers)
        run.emit(events.StepStarted(self.label, self.number, run.total_steps, instr.original))
        started = time.monotonic()
        line = self.stage.line if trigger else instr.line
        # what explaining a miss needs: the instruction as written, the variables it used, its sources
        self._source, self._used, self._sources, self._ran_for = instr.original, frozenset[str](), None, None
        self._speculate = False
        self._drop_speculations(self._position)
        entries = len(self.image.config.history)
        try:
            cached = self._dispatch(instr, line)
        except DockerfileError as exc:
            raise exc.located(run.file, line) from None
        if cached:  # BuildRun.event counts it (stages may run in parallel)
            run.emit(events.StepCached(self.label, self.number))
        seconds = time.monotonic() - started
        if len(self.image.config.history) > entries:  # lamina history: how long it took when it ran
            # the time the step's work took when it really ran (for a cached step: back then)
            took = float(self._ran_for) if self._ran_for is not None else (0.0 if cached else seconds)
            run.timings.setdefault(self.stage.index, {})[entries] = (took, cached)
        shown = last or len(self.image.layers) > layers or len(self.image.config.history) <= _IDS_UP_TO
        run.emit(events.StepDone(self.label, self.number, _image_id(self.image) if shown else "", seconds, cached))

    def _env(self) -> Mapping[str, str]:
        """Variables for expansion and RUN: the later of ENV and ARG wins (BuildKit's rule).

        A view, not a copy: a step must not copy every variable (10,000 ENVs would be quadratic).
        """
        env = self.image.config.config.env_dict()
        return ChainMap(dict(self.args), env) if self.args else env  # type: ignore[arg-type]

    def _dispatch(self, instr: ins.Instruction, line: int) -> bool:
        run = self.run
        if isinstance(instr, ins.Arg):
            return self._arg(instr)
        expanded, self._used = expand_tracking(instr, self._env(), run.lexer, file=run.file)
        cfg = self.image.config.config
        inputs: dict[str, Any]
        match expanded:
            case ins.Run():
                plan = steps.plan_run(expanded, cfg, self._run_args(), run.options.network)
                inputs = {"instr": canonical_instruction(expanded), "run": plan.key_inputs()}
                mounts = None
                if expanded.mounts:  # RUN --mount: its specs and sources' checksums join the key
                    from lamina.build.mountsetup import RunMounts, parse_run_mounts

                    mounts = RunMounts(self, parse_run_mounts(expanded, self._env(), run.lexer, cfg.working_dir),
                                       self.where(line))
                    inputs["mounts"] = mounts.key_inputs()
                text = " ".join(expanded.command)
                self._speculate = True  # should it run, the COPYs after it may be made meanwhile
                return self._layer_step(inputs, history_text(expanded, cfg, plan.args), lambda root: steps.execute_run(
                    root, plan, run.executor, self._output, where=self.where(line), text=text, mounts=mounts))
            case ins.Copy() | ins.Add():
                self._speculate = True
                return self._copy(expanded, line)
            case ins.Workdir():
                new = metadata.apply(cfg, expanded, file=run.file)
                if new.working_dir == "/":  # BuildKit creates no directory, so no layer, for the root
                    return self._meta_step(expanded, new)
                self.image = with_container_config(self.image, new)
                inputs = {"instr": canonical_instruction(expanded), "path": new.working_dir, "user": cfg.user}
                return self._layer_step(inputs, history_text(expanded, new), lambda root: steps.execute_workdir(
                    root, new.working_dir, cfg.user, self.where(line)))
            case ins.Maintainer():
                self.image = replace(self.image, config=replace(self.image.config, author=expanded.name))
                return self._meta_step(expanded, cfg)
            case ins.Env():
                for name, _ in expanded.pairs:
                    self.args.pop(name, None)  # a later ENV hides an ARG of the same name
                return self._meta_step(expanded, metadata.apply(cfg, expanded, file=run.file))
            case ins.Onbuild():
                # BuildKit records ONBUILD in the config only: no history entry
                self.image = with_container_config(self.image, metadata.apply(cfg, expanded, file=run.file))
                self.key = cachekey.step_key(self.key, "ONBUILD", {"instr": canonical_instruction(expanded)})
                return False
            case ins.Cmd():
                new = metadata.apply(cfg, expanded, file=run.file)
                self.cmd_set = True
                return self._meta_step(expanded, new)
            case _:
                new = metadata.apply(cfg, expanded, file=run.file, cmd_set=self.cmd_set)
                return self._meta_step(expanded, new)

    def _run_args(self) -> dict[str, str]:
        out = dict(self.args)
        for name in sorted(steps.PROXY_ARGS):
            if name in self.run.options.build_args:
                out.setdefault(name, self.run.options.build_args[name])
        return out

    def _arg(self, instr: ins.Arg) -> bool:
        run = self.run
        expanded, _ = expand_tracking(instr, self._env(), run.lexer, file=run.file)
        assert isinstance(expanded, ins.Arg)
        for name, default in expanded.pairs:
            run.used_args.add(name)
            if name in run.options.build_args:
                value: str | None = run.options.build_args[name]
            elif default is not None:
                value = default
            else:
                value = run.global_args.get(name)
            if value is not None:
                self.args[name] = value
        # BuildKit records the ARG as written (its default, not a --build-arg value), and so does
        # its key: a new value misses at its first use (the RUN that sees it), as docker documents
        return self._meta_step(expanded, self.image.config.config)

    def _copy(self, instr: ins.Copy | ins.Add, line: int) -> bool:
        run = self.run
        where = self.where(line)
        workdir = self.image.config.config.working_dir
        _check_remote(instr, where)
        canon = canonical_instruction(instr)
        created_by = history_text(instr, self.image.config.config)
        # BuildKit builds a --link layer on its own (then merges it) only when there is no --chmod
        link = instr.link and not instr.chmod
        step = self._link_step if link else self._layer_step
        if link and instr.chown:
            instr = replace(instr, chown=_link_chown(instr.chown, where))
        if instr.from_:
            index = stage_index(run.dockerfile, instr.from_, before=self.stage.index)
            if index is not None:
                source = run.stage_result(index)
                src_image, src_key = source.image, source.key
            else:
                src_image, src_key = run.base_image(instr.from_)
            inputs: dict[str, Any] = {"instr": canon, "from": src_key, "workdir": workdir}

            def op(root: Path) -> None:
                with self._mounted(run.layers.lowers(src_image)) as mount:
                    src_root = SourceRoot.stage(mount.root)
                    selected = _select(src_root, instr, instr.sources, where)
                    steps.execute_copy(root, instr, selected, src_root, workdir=workdir, where=where)
            return step(inputs, created_by, op)
        return self._copy_context(instr, {"instr": canon, "workdir": workdir}, created_by, where, step)

    def _copy_context(self, instr: ins.Copy | ins.Add, inputs: dict[str, Any], created_by: str, where: str,
                      step: Callable[[dict[str, Any], str, Callable[[Path], None]], bool]) -> bool:
        """COPY/ADD from the build context, ADD's URLs included (fetched for the key unless --checksum)."""
        from lamina.build.remote import file_name, is_url

        run = self.run
        expected = instr.checksum if isinstance(instr, ins.Add) else None
        if isinstance(instr, ins.Add) and len(instr.sources) == 1 and _git_source(instr.sources[0], where):
            return self._copy_git(instr, inputs, created_by, where, step)
        urls = [src for src in instr.sources if is_url(src)]
        if urls:
            run.no_memo("ADD of a URL")  # what the URL serves may change; a build asks it again
        picked = [[src] if is_url(src) else _select(run.context, instr, (src,), where) for src in instr.sources]
        selected = [s for group in picked for s in group if not isinstance(s, str)]
        inputs["sources"] = checksum(run.context, selected, self._recording(selected)) if selected else None
        workdir = inputs["workdir"]
        with _download_dir(run.store.root, bool(urls)) as tmp:
            fetched = {} if expected else {url: _fetch(url, tmp, None, where) for url in urls}
            if urls:  # with --checksum the key needs no download: the checksum stands for the file
                inputs["remote"] = [[file_name(url), expected or fetched[url].digest] for url in urls]

            def op(root: Path) -> None:
                for url in urls:
                    if url not in fetched:
                        fetched[url] = _fetch(url, tmp, expected, where)
                ordered = [fetched[s] if isinstance(s, str) else s for group in picked for s in group]
                steps.execute_copy(root, instr, ordered, run.context, workdir=workdir, where=where)
            return step(inputs, created_by, op)

    def _copy_git(self, instr: ins.Add, inputs: dict[str, Any], created_by: str, where: str,
                  step: Callable[[dict[str, Any], str, Callable[[Path], None]], bool]) -> bool:
        """ADD of a Git repository: keyed by the commit its ref names now, cloned only if the step runs."""
        from lamina.build import gitsource

        source = _git_source(instr.sources[0], where)
        assert source is not None
        self.run.no_memo("ADD of a Git repository")  # its ref may move; a build resolves it again
        store_root, workdir = self.run.store.root, inputs["workdir"]
        with _download_dir(store_root, True) as tmp:
            commit = _in_step(lambda: gitsource.resolve(source, checksum=instr.checksum, scratch=tmp), where)
        inputs["commit"] = commit  # the URL, ref and subdir are in the instruction; a miss says "commit changed"

        def op(root: Path) -> None:
            with _download_dir(store_root, True) as scratch:
                tree = _in_step(lambda: gitsource.checkout(source, commit, scratch / "git",
                                                           keep_git_dir=instr.keep_git_dir), where)
                src_root = SourceRoot.context(tree)
                selected = _select(src_root, instr, (".",), where)
                steps.execute_copy(root, instr, selected, src_root, workdir=workdir, where=where)
        return step(inputs, created_by, op)

    def _link_step(self, inputs: dict[str, Any], created_by: str, op: Callable[[Path], None]) -> bool:
        """A ``--link`` layer: built over an empty root, so it is also cached apart from the image below.

        Its second key leaves the parent out: after a change earlier in the
        Dockerfile the same layer is reused on top of the new parent, as
        BuildKit's merge of a ``--link`` copy is.
        """
        run = self.run

        def build(_record: dict[str, Any] | None) -> tuple[Layer, dict[str, Any], str, bool]:
            layer, cached = self._link_layer(inputs, op)
            record = {"created": run.now(), "layer": _layer_json(layer)}
            if self.no_cache:
                return layer, record, self._rerun_key(key, layer, record), cached
            run.cache_put(key, record)
            return layer, record, key, cached

        key = cachekey.step_key(self.key, "layer", inputs)
        layer, record, key, cached = self._hit_or_build(key, build)
        self.image = append_layer(self.image, layer, History(created_by=created_by, created=record["created"]))
        self.key = key
        return cached

    def _link_layer(self, inputs: dict[str, Any], op: Callable[[Path], None]) -> tuple[Layer, bool]:
        """The layer over an empty root: from its parent-free record, else built now; and whether cached."""
        run = self.run
        link_key = cachekey.step_key("", "link", inputs)
        with self._step_lock(link_key):
            layer = _cached_layer(run, self._cache_get(link_key))
            if layer is not None:
                return layer, True
            layer = self._layer_over([], op)
            run.cache_put(link_key, {"created": run.now(), "layer": _layer_json(layer)})
        return layer, False

    # cached step kinds --------------------------------------------------------------
    def _meta_step(self, instr: ins.Instruction, new_config: Any) -> bool:
        key = cachekey.step_key(self.key, type(instr).__name__, {"instr": canonical_instruction(instr)})
        record = self._cache_get(key)
        if record is not None:
            created = record["created"]
        else:
            inputs = self._inputs(type(instr).__name__.upper(), canonical_instruction(instr), {}, instr)
            self._explain_miss(key, None, inputs)
            # a build of the same step at this moment may record it first: both then share its time
            created = self._cache_claim(key, {"created": self.run.now(), "inputs": inputs.to_json()})["created"]
        history = History(created_by=history_text(instr, new_config), created=created)
        self.image = add_history(with_container_config(self.image, new_config), history)
        self._reached(key, ran=record is None)
        self.key = key
        return record is not None

    def _layer_step(self, inputs: dict[str, Any], created_by: str, op: Callable[[Path], None]) -> bool:
        def build(record: dict[str, Any] | None) -> tuple[Layer, dict[str, Any], str, bool]:
            layer, record = self._run_layer(key, record, inputs, op)
            return layer, record, self._rerun_key(key, layer, record) if self.no_cache else key, False

        key = cachekey.step_key(self.key, "layer", inputs)
        layer, record, key, cached = self._hit_or_build(key, build)
        self._ran_for = record.get("seconds")
        self.image = append_layer(self.image, layer, History(created_by=created_by, created=record["created"]))
        self._reached(key, ran=not cached)
        self.key = key
        return cached

    def _hit_or_build(self, key: str, build: Callable[[dict[str, Any] | None], tuple[Layer, dict[str, Any], str, bool]],
                      ) -> tuple[Layer, dict[str, Any], str, bool]:
        """The layer step's record, else ``build(stale record)`` under the step's lock.

        Another build (thread or process) may be running this very step: the lock makes us wait
        for it, and the second look then finds its record. Returns (layer, record, chain key, cached).
        """
        hit = self._hit(key)
        if hit is None:
            with self._step_lock(key):
                hit = self._hit(key)
                if hit is None:
                    return build(self._cache_get(key))
        return hit[0], hit[1], str(hit[1].get("chain", key)), True  # see _rerun_key

    def _hit(self, key: str) -> tuple[Layer, dict[str, Any]] | None:
        """The record of ``key`` and its layer, when both are there (a pruned blob is a miss)."""
        record = self._cache_get(key)
        layer = _cached_layer(self.run, record)
        return None if layer is None or record is None else (layer, record)

    def _run_layer(self, key: str, record: dict[str, Any] | None, inputs: dict[str, Any],
                   op: Callable[[Path], None]) -> tuple[Layer, dict[str, Any]]:
        """Run a missed step over its parent's snapshots, commit it, record it (the caller holds its lock)."""
        run = self.run
        why = self._inputs(str(inputs["instr"]["kind"]), inputs["instr"], inputs)
        self._explain_miss(key, record, why)
        started = time.monotonic()
        lowers = run.layers.lowers(self.image)
        made = self._adopt_speculation(lowers, inputs)
        if made is not None:
            layer = made
        else:
            with self._mounted(lowers) as mount:  # mounted first: its set-up enters the mount namespace
                if self._speculate:
                    self._speculate_following(lowers)
                try:
                    op(mount.root)
                except BuildError as exc:
                    hint = self._keep_failed(mount, lowers, inputs.get("run"), exc, inputs.get("mounts"))
                    if hint is None:
                        raise
                    raise BuildError(f"{exc} {hint}") from exc
                mount.unmount()
                layer = run.layers.commit(mount.upper, lowers)
        record = {"created": run.now(), "layer": _layer_json(layer), "inputs": why.to_json(),
                  "seconds": round(time.monotonic() - started, 3)}
        if not self.no_cache:
            run.cache_put(key, record)
        return layer, record

    # the speculative COPY (see lamina.build.speculate) ---------------------------------
    def _speculate_following(self, lowers: list[Path]) -> None:
        """Start making the layers of the COPYs right after this step over ``lowers``, this step's own."""
        instructions = self.stage.instructions
        if not self._position or not speculate.worth_it():
            return  # an ONBUILD trigger's step, or a single core
        for position in range(self._position + 1, min(len(instructions), self._position + speculate.AHEAD) + 1):
            nxt = instructions[position - 1]
            if not speculate.eligible(nxt):
                return
            if position in self._speculations:
                continue  # started before an earlier step: it is compared with that step's layer too
            try:  # COPYs change neither ENV nor ARG nor WORKDIR: each will expand the same
                expanded, _ = expand_tracking(nxt, self._env(), self.run.lexer, file=self.run.file)
            except LaminaError:
                return
            assert isinstance(expanded, ins.Copy)
            if not speculate.eligible(expanded):
                return
            self._speculations[position] = self._speculation(expanded, lowers, self.where(nxt.line))

    def _speculation(self, instr: ins.Copy, lowers: list[Path], where: str) -> speculate.Speculation:
        workdir = self.image.config.config.working_dir
        return speculate.Speculation(instr, workdir, lowers,
                                     lambda: self._speculative_copy(instr, workdir, lowers, where))

    def _speculative_copy(self, instr: ins.Copy, workdir: str, lowers: list[Path], where: str) -> speculate.Made:
        """The COPY over ``lowers``, on the speculation's thread (an error gives it up)."""
        from lamina.snapshot.overlap import symlink_on_path

        run = self.run
        selected = [s for src in instr.sources for s in _select(run.context, instr, (src,), where)]
        sources = checksum(run.context, selected, run.stat_cache) if selected else None

        def op(root: Path) -> None:
            if symlink_on_path(root, speculate.destination(instr, workdir)):
                raise speculate.GaveUp("a symlink on the destination's path")
            steps.execute_copy(root, instr, selected, run.context, workdir=workdir, where=where)
        layer = self._layer_over(lowers, op)
        return speculate.Made(layer, run.store.snapshot_path(layer.diff_id), sources)

    def _layer_over(self, lowers: list[Path], op: Callable[[Path], None]) -> Layer:
        """``op`` run on an overlay of ``lowers``, its upper dir committed as a layer."""
        with self._mounted(lowers) as mount:
            op(mount.root)
            mount.unmount()
            return self.run.layers.commit(mount.upper, lowers)

    def _adopt_speculation(self, lowers: list[Path], inputs: dict[str, Any]) -> Layer | None:
        """This step's speculated layer, if it may stand for the step (see :func:`speculate.adopted`)."""
        spec = self._speculations.pop(self._position, None)
        if spec is None:
            return None
        return speculate.adopted(spec, lowers, inputs.get("instr"), inputs.get("sources"), inputs.get("workdir"))

    def _drop_speculations(self, before: int) -> None:
        """Wait for the speculations no step will use: those of steps before ``before`` (cached, failed)."""
        for position in [p for p in self._speculations if p < before]:
            self._speculations.pop(position).wait()

    def _rerun_key(self, key: str, layer: Layer, record: dict[str, Any]) -> str:
        """The chain key after a step that ran despite a record (--no-cache, --no-cache-filter).

        This run's record replaces the old one, so the next normal build gives this build's
        image, as docker's does after ``--no-cache``. When the run made other content, the steps
        after it get new keys (the parent key salted with the new layer), so no record made on
        top of the old content is reused; the record under ``key`` then names that new chain
        (``"chain"``), which a later hit continues on (:meth:`_hit_or_build`).
        """
        raw = self.run.store.db.cache_get(key, touch=False)
        previous = _cached_layer(self.run, json.loads(raw) if raw else None)
        if previous is None or previous.digest == layer.digest:  # no record, its blob gone, or the same
            self.run.cache_put(key, record)
            return key
        salted = cachekey.step_key(key, "rebuilt", {"layer": str(layer.digest)})
        self.run.cache_put(salted, record)
        self.run.cache_put(key, {**record, "chain": salted})
        return salted

    # explaining misses, keeping a failed RUN (build/explain.py, build/buildlog.py) ---------------------
    def _recording(self, selected: list[Any]) -> explain.RecordingStatCache:
        """The stat cache for a COPY's checksum, remembering each file's digest for its record."""
        recorder = explain.RecordingStatCache(self.run.stat_cache)
        self._sources = (selected, recorder)
        return recorder

    def _inputs(self, kind: str, canon: Any, key_inputs: dict[str, Any],
                instr: ins.Instruction | None = None) -> explain.StepInputs:
        """The structured inputs of this step's key, kept in its record to explain later misses."""
        run_inputs = key_inputs.get("run")
        if isinstance(instr, ins.Arg):
            variables = {name: ("arg", value) for name, value in instr.pairs if value is not None}
        else:
            scope, in_run = self._env(), self._run_args() if run_inputs is not None else {}
            variables = {name: ("arg", in_run[name]) if name in in_run else
                         ("arg" if name in self.args else "env", scope[name])
                         for name in sorted(set(self._used) | set(in_run)) if name in scope or name in in_run}
        other = {k: v for k, v in key_inputs.items() if k not in ("instr", "sources", "run")}
        if run_inputs is not None:
            other.update(user=run_inputs["user"], cwd=run_inputs["cwd"], network=run_inputs["network"])
        files = None
        if self._sources is not None:
            selected, recorder = self._sources
            files = explain.file_inputs(self.run.context.path, selected, recorder.seen)
        return explain.StepInputs(self.key, kind, self._source, canon, variables, files, other)

    def _explain_miss(self, key: str, record: dict[str, Any] | None, inputs: explain.StepInputs) -> None:
        run = self.run
        if run.options.no_cache:
            found: tuple[str, ...] = ("--no-cache",)
        elif self.label in run.options.no_cache_filter:
            found = (f"--no-cache-filter {self.label}",)
        elif record is not None:
            found = ("its cached layer is gone",)
        else:
            previous = run.previous_inputs(inputs.parent, f"{self.stage.index}/{self.number}")
            if previous is None:
                found = ("no previous build",)
            elif previous[0] == key:
                found = ("its cache record is gone (pruned, or the cache is off for this stage)",)
            elif previous[1] is None:
                found = ("inputs changed",)
            else:
                found = explain.reasons(inputs, previous[1], parent=self._parent_note())
        run.emit(events.CacheMiss(self.label, self.number, run.total_steps, self._source, found))

    def _parent_note(self) -> str:
        seen = self.run.built.get(self.key)
        if seen is None:
            return "parent changed"
        number, ran = seen
        return f"parent step {number} " + ("rebuilt" if ran else "differs from the previous build")

    def _reached(self, key: str, *, ran: bool) -> None:
        run = self.run
        run.built[key] = (self.number, ran)
        run.lineage.append((run.identity, f"{self.stage.index}/{self.number}", self.key, key))

    def _keep_failed(self, mount: Any, lowers: list[Path], process: Any, exc: BuildError,
                     mounts: Any = None) -> str | None:
        """Keep a failed RUN's upper dir for ``lamina debug``; the hint to print, or None."""
        run = self.run
        if process is None or run.log is None or run.cancelled.is_set():
            return None
        try:
            mount.unmount()
            run.log.keep_failed(mount.upper, {
                "lowers": [str(p) for p in lowers], "process": process, "step": self.number,
                "stage": self.label, "text": self._source, "error": str(exc),
                "mounts": mounts or [], "context": str(run.context.path)})  # RUN --mounts, for lamina debug
        except (OSError, LaminaError):
            return None
        from lamina.store.paths import default_root

        root = "" if run.store.root.resolve() == default_root().resolve() else f" --root {run.store.root}"
        return f"(to debug it: lamina{root} debug {run.log.build_id})"

    @contextlib.contextmanager
    def _mounted(self, lowers: list[Path]) -> Iterator[Any]:
        """An overlay over ``lowers``, removed again whatever happens."""
        mount = self.run.snapshotter.prepare(lowers, self._work_root())
        try:
            yield mount
        finally:
            mount.discard()

    def _work_root(self) -> Path:
        path = self.run.store.root / "mounts"
        path.mkdir(exist_ok=True)
        return path

    def _output(self, data: bytes) -> None:
        self.run.emit(events.StepOutput(self.label, self.number, data))


def _select(root: SourceRoot, instr: ins.Copy | ins.Add, sources: tuple[str, ...], where: str) -> list[Any]:
    try:
        return select(root, sources, parents=instr.parents, excludes=instr.excludes)
    except LaminaError as exc:
        raise BuildError(f"{where}: {exc}") from exc


def _check_remote(instr: ins.Copy | ins.Add, where: str) -> None:
    """URLs and Git sources: ADD downloads URLs (see :mod:`lamina.build.remote`), COPY refuses both."""
    from lamina.build.remote import check_flags, is_git, is_url

    try:
        if isinstance(instr, ins.Add):
            check_flags(instr.sources, instr.checksum)
        elif any(is_url(s) or is_git(s) for s in instr.sources):
            raise BuildError("source can't be a URL for COPY")
    except LaminaError as exc:
        raise BuildError(f"{where}: {exc}") from exc


def _git_source(source: str, where: str) -> Any:
    """ADD's source as a :class:`~lamina.build.gitsource.GitSource`, or None when it is not one."""
    from lamina.build.gitsource import parse

    return _in_step(lambda: parse(source), where)


def _in_step(call: Callable[[], Any], where: str) -> Any:
    """``call()``, its lamina errors located at the step."""
    try:
        return call()
    except LaminaError as exc:
        raise BuildError(f"{where}: {exc}") from exc


def _link_chown(spec: str, where: str) -> str:
    from lamina.build.copy import link_chown

    try:
        return link_chown(spec)
    except LaminaError as exc:
        raise BuildError(f"{where}: {exc}") from exc


@contextlib.contextmanager
def _download_dir(store_root: Path, needed: bool) -> Iterator[Path]:
    """A temporary directory for ADD's downloads, removed after the step (none made if not ``needed``)."""
    if not needed:
        yield store_root / "tmp"
        return
    import shutil
    import tempfile

    (store_root / "tmp").mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="add-", dir=store_root / "tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _fetch(url: str, into: Path, expected: str | None, where: str) -> Any:
    from lamina.build.remote import fetch

    try:
        return fetch(url, into, checksum=expected)
    except LaminaError as exc:
        raise BuildError(f"{where}: {exc}") from exc


def _layer_json(layer: Layer) -> dict[str, Any]:
    return {"digest": str(layer.digest), "diff_id": str(layer.diff_id), "size": layer.size,
            "media_type": layer.desc.media_type}


def _cached_layer(run: BuildRun, record: dict[str, Any] | None) -> Layer | None:
    if not record or "layer" not in record:
        return None
    info = record["layer"]
    digest = Digest.parse(info["digest"])
    if not run.store.blobs.has(digest) and not run.fetch_cached_blob(digest):  # --cache-from: lazily
        return None
    return Layer(Descriptor(info["media_type"], digest, int(info["size"])), Digest.parse(info["diff_id"]))


# Each step's image ID hashes the whole config; past this many history entries only layer steps and
# a stage's last step show one, so a Dockerfile of 10,000 ENVs is not quadratic (their IDs name no image)
_IDS_UP_TO = 200


def _image_id(image: Image) -> str:
    """The ID the image would have if the build ended here (created = its last step's time)."""
    created = image.config.history[-1].created if image.config.history else None
    return Digest.of(with_created(image, created).config.encode()).short
