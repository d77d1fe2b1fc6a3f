"""Building one stage: its base, then each instruction as a cached step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.build import cachekey, events, metadata, steps
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
        self.image: Image
        self.key = ""
        self.args: dict[str, str] = {}
        self.cmd_set = False
        previous = run.dockerfile.stages[: stage.index]
        self.number = sum(1 + len(s.instructions) for s in previous) + 1

    def where(self, line: int) -> str:
        return f"{self.run.file}:{line}"

    # the stage ----------------------------------------------------------------
    def build(self) -> StageResult:
        from lamina.build.builder import StageResult

        self._from()
        for instr in self._triggers():
            self._step(instr, trigger=True)
        for instr in self.stage.instructions:
            self.number += 1
            self._step(instr)
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
        run.emit(events.StepStarted(self.label, self.number, run.total_steps, frm.original))
        started = time.monotonic()
        index = self._stage_named(name)
        try:
            if index is not None:
                base = run.stage_result(index)
                self.image, self.key = base.image, base.key
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
        for stage in self.run.dockerfile.stages[: self.stage.index]:
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
    def _step(self, instr: ins.Instruction, *, trigger: bool = False) -> None:
        run = self.run
        run.emit(events.StepStarted(self.label, self.number, run.total_steps, instr.original))
        started = time.monotonic()
        line = self.stage.line if trigger else instr.line
        try:
            cached = self._dispatch(instr, line)
        except DockerfileError as exc:
            raise exc.located(run.file, line) from None
        if cached:
            run.cached_steps += 1
            run.emit(events.StepCached(self.label, self.number))
        run.emit(events.StepDone(self.label, self.number, _image_id(self.image), time.monotonic() - started, cached))

    def _env(self) -> dict[str, str]:
        """Variables for expansion and RUN: the later of ENV and ARG wins (BuildKit's rule)."""
        return {**self.image.config.config.env_dict(), **self.args}

    def _dispatch(self, instr: ins.Instruction, line: int) -> bool:
        run = self.run
        if isinstance(instr, ins.Arg):
            return self._arg(instr)
        expanded, _names = expand_tracking(instr, self._env(), run.lexer, file=run.file)
        cfg = self.image.config.config
        inputs: dict[str, Any]
        match expanded:
            case ins.Run():
                plan = steps.plan_run(expanded, cfg, self._run_args(), run.options.network)
                inputs = {"instr": canonical_instruction(expanded), "run": plan.key_inputs()}
                text = " ".join(expanded.command)
                return self._layer_step(inputs, history_text(expanded, cfg, plan.args), lambda root: steps.execute_run(
                    root, plan, run.executor, self._output, where=self.where(line), text=text))
            case ins.Copy() | ins.Add():
                return self._copy(expanded, line)
            case ins.Workdir():
                new = metadata.apply(cfg, expanded, file=run.file)
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
        shown: list[tuple[str, str | None]] = []
        for (name, _raw), (_, default) in zip(instr.pairs, expanded.pairs, strict=True):
            run.used_args.add(name)
            if name in run.options.build_args:
                value: str | None = run.options.build_args[name]
            elif default is not None:
                value = default
            else:
                value = run.global_args.get(name)
            if value is not None:
                self.args[name] = value
            shown.append((name, value))
        return self._meta_step(replace(expanded, pairs=tuple(shown)), self.image.config.config)

    def _copy(self, instr: ins.Copy | ins.Add, line: int) -> bool:
        run = self.run
        where = self.where(line)
        workdir = self.image.config.config.working_dir
        for src in instr.sources:
            if src.startswith(("http://", "https://", "git@")):
                raise BuildError(f"{where}: ADD from a URL is not supported yet: {src}")
        canon = canonical_instruction(instr)
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
                    selected = _select(src_root, instr.sources, where)
                    steps.execute_copy(root, instr, selected, src_root, workdir=workdir, where=where)
            return self._layer_step(inputs, history_text(instr, self.image.config.config), op)
        selected = _select(run.context, instr.sources, where) if instr.sources else []
        inputs = {"instr": canon, "workdir": workdir,
                  "sources": checksum(run.context, selected, run.stat_cache) if selected else None}
        return self._layer_step(inputs, history_text(instr, self.image.config.config), lambda root: steps.execute_copy(
            root, instr, selected, run.context, workdir=workdir, where=where))

    # cached step kinds --------------------------------------------------------------
    def _meta_step(self, instr: ins.Instruction, new_config: Any) -> bool:
        key = cachekey.step_key(self.key, type(instr).__name__, {"instr": canonical_instruction(instr)})
        record = self.run.cache_get(key)
        created = record["created"] if record else self.run.now()
        if record is None:
            self.run.cache_put(key, {"created": created})
        history = History(created_by=history_text(instr, new_config), created=created)
        self.image = add_history(with_container_config(self.image, new_config), history)
        self.key = key
        return record is not None

    def _layer_step(self, inputs: dict[str, Any], created_by: str, op: Callable[[Path], None]) -> bool:
        run = self.run
        key = cachekey.step_key(self.key, "layer", inputs)
        record = run.cache_get(key)
        layer = _cached_layer(run, record)
        if layer is None or record is None:
            lowers = run.layers.lowers(self.image)
            with self._mounted(lowers) as mount:
                op(mount.root)
                mount.unmount()
                layer = run.layers.commit(mount.upper, lowers)
            created = run.now()
            run.cache_put(key, {"created": created, "layer": _layer_json(layer)})
            cached = False
        else:
            created = record["created"]
            cached = True
        self.image = append_layer(self.image, layer, History(created_by=created_by, created=created))
        self.key = key
        return cached

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


def _select(root: SourceRoot, sources: tuple[str, ...], where: str) -> list[Any]:
    try:
        return select(root, sources)
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
    if not run.store.blobs.has(digest):
        return None
    return Layer(Descriptor(info["media_type"], digest, int(info["size"])), Digest.parse(info["diff_id"]))


def _image_id(image: Image) -> str:
    """The ID the image would have if the build ended here (created = its last step's time)."""
    created = image.config.history[-1].created if image.config.history else None
    return Digest.of(with_created(image, created).config.encode()).short
