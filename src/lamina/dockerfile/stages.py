"""A Dockerfile as build stages: the global ARGs, then one stage per FROM.

Stage names are matched case-insensitively and kept lower-cased, like
BuildKit. A stage may also be referred to by its index (``COPY --from=0``),
which :func:`stage_index` resolves.
"""

from __future__ import annotations

from lamina.errors import DockerfileError
from lamina.model import model

from .instructions import Arg, From, Instruction, to_instruction
from .parser import Directives, parse

__all__ = ["Dockerfile", "Stage", "find_stage", "parse_dockerfile", "stage_index"]


@model
class Stage:
    """One ``FROM`` and the instructions up to the next; ``line`` is the FROM's."""

    name: str | None
    index: int
    from_: From
    instructions: tuple[Instruction, ...]
    line: int


@model
class Dockerfile:
    """A whole Dockerfile; ``global_args`` are the ARGs before the first FROM."""

    directives: Directives
    global_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    file: str = "Dockerfile"


def parse_dockerfile(text: str | bytes, file: str = "Dockerfile") -> Dockerfile:
    """Parse and check a Dockerfile; raise :class:`DockerfileError` with its line."""
    parsed = parse(text, file)
    global_args: list[Arg] = []
    stages: list[Stage] = []
    current: tuple[From, list[Instruction]] | None = None
    for node in parsed.nodes:
        instr = to_instruction(node, file)
        if isinstance(instr, From):
            # BuildKit accepts a stage name used twice: a later reference means the last one.
            if current:
                stages.append(_stage(len(stages), *current))
            current = (instr, [])
        elif current is not None:
            current[1].append(instr)
        elif isinstance(instr, Arg):
            global_args.append(instr)
        else:
            raise DockerfileError("no build stage in current context", file=file, line=instr.line)
    if current is None:
        # Only ARGs (or nothing Docker would build): BuildKit's wording.
        raise DockerfileError("dockerfile contains no stages to build", file=file)
    stages.append(_stage(len(stages), *current))
    return Dockerfile(parsed.directives, tuple(global_args), tuple(stages), file)


def _stage(index: int, from_: From, body: list[Instruction]) -> Stage:
    return Stage(from_.stage_name, index, from_, tuple(body), from_.line)


def find_stage(df: Dockerfile, target: str) -> int:
    """Index of the last stage named ``target`` (case-insensitive), for ``--target``."""
    wanted = target.lower()
    for stage in reversed(df.stages):
        if stage.name == wanted:
            return stage.index
    raise DockerfileError(f"target stage {target} could not be found", file=df.file)


def stage_index(df: Dockerfile, ref: str, before: int | None = None) -> int | None:
    """The stage ``ref`` names (a stage name or a decimal index), or None for an image.

    ``before`` limits the search to earlier stages, as ``COPY --from`` and
    ``FROM`` require: a stage can only use stages defined above it. Of two
    stages with one name the later wins; a stage naming itself is a cycle.
    """
    limit = len(df.stages) if before is None else before
    wanted = ref.lower()
    if before is not None and before < len(df.stages) and df.stages[before].name == wanted:
        raise DockerfileError(f"circular dependency detected on stage: {wanted}", file=df.file,
                              line=df.stages[before].line)
    for stage in reversed(df.stages[:limit]):
        if stage.name == wanted:
            return stage.index
    if ref.isdecimal() and ref.isascii():
        if int(ref) < limit:
            return int(ref)
        raise DockerfileError(f"invalid stage index {ref}: no such earlier stage", file=df.file)
    return None
