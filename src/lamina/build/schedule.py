"""The stage graph: which stages a target needs, and which of them can build at once.

Pure functions of a parsed :class:`~lamina.dockerfile.stages.Dockerfile`. A
stage depends on the earlier stages its ``FROM`` names, that a ``COPY
--from`` names (by name or index), and that a ``RUN --mount=...,from=``
names. A reference that is still unexpanded (``$VAR``) could name any earlier
stage, so it conservatively depends on all of them. The builder runs the
stages in :func:`ready` order on a small thread pool, as BuildKit does; edges
this graph cannot see (an ONBUILD trigger's ``COPY --from``) still work,
because the builder builds a missing stage on demand.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from lamina.dockerfile import instructions as ins
from lamina.dockerfile.stages import Dockerfile, Stage, stage_index
from lamina.errors import DockerfileError

Graph = Mapping[int, frozenset[int]]


def stage_deps(df: Dockerfile, stage: Stage, from_image: Callable[[Stage], str] | None = None) -> frozenset[int]:
    """Indexes of the earlier stages ``stage`` reads from.

    ``from_image`` gives the stage's FROM image after global-ARG expansion
    (default: the text as written).
    """
    earlier = range(stage.index)
    deps: set[int] = set()
    base = from_image(stage) if from_image else stage.from_.image
    if "$" in base:
        return frozenset(earlier)
    wanted = base.lower()
    named = [s.index for s in df.stages[: stage.index] if s.name == wanted]  # FROM takes names only
    deps.update(named[-1:])  # of two stages with one name, the last counts
    for instr in stage.instructions:
        for ref in _references(instr):
            if "$" in ref:
                return frozenset(earlier)
            try:
                index = stage_index(df, ref, before=stage.index)
            except DockerfileError:
                continue  # reported with its line when the step runs
            if index is not None:
                deps.add(index)
    return frozenset(deps)


def _references(instr: ins.Instruction) -> list[str]:
    if isinstance(instr, ins.Copy | ins.Add) and instr.from_:
        return [instr.from_]
    if isinstance(instr, ins.Run):
        return [value for spec in instr.mounts for key, _, value in
                (part.partition("=") for part in spec.split(",")) if key.strip().lower() == "from" and value]
    return []


def needed(df: Dockerfile, target: int, from_image: Callable[[Stage], str] | None = None) -> dict[int, frozenset[int]]:
    """The graph restricted to ``target`` and the stages it needs, transitively."""
    graph: dict[int, frozenset[int]] = {}
    todo = [target]
    while todo:
        index = todo.pop()
        if index in graph:
            continue
        graph[index] = stage_deps(df, df.stages[index], from_image)
        todo.extend(graph[index])
    return dict(sorted(graph.items()))


def ready(graph: Graph, done: Collection[int], started: Collection[int]) -> list[int]:
    """Stages not yet started whose dependencies are all done, lowest index first."""
    return [i for i, deps in graph.items() if i not in started and i not in done and deps <= set(done)]


def parallel(graph: Graph) -> bool:
    """Whether any two stages of ``graph`` are independent (else a pool gains nothing)."""
    closure: dict[int, set[int]] = {}
    for index in sorted(graph):
        reach: set[int] = set()
        for dep in graph[index]:
            reach |= {dep} | closure.get(dep, set())
        closure[index] = reach
    nodes = sorted(graph)
    return any(b not in closure[a] and a not in closure[b] for i, a in enumerate(nodes) for b in nodes[i + 1:])


__all__ = ["Graph", "needed", "parallel", "ready", "stage_deps"]
