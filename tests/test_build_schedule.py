"""The stage graph: dependencies, what a target needs, what can run at once."""

from __future__ import annotations

import pytest

from lamina.build.schedule import needed, parallel, ready, stage_deps
from lamina.dockerfile.stages import parse_dockerfile

THREE_INTO_ONE = """\
FROM busybox AS a
RUN echo a
FROM busybox AS b
RUN echo b
FROM busybox AS c
RUN echo c
FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
COPY --from=1 /b /b2
RUN --mount=type=bind,from=c,target=/c cat /c/c
"""


def test_three_independent_stages_feed_the_last() -> None:
    df = parse_dockerfile(THREE_INTO_ONE)
    assert stage_deps(df, df.stages[3]) == {0, 1, 2}
    assert [stage_deps(df, s) for s in df.stages[:3]] == [set(), set(), set()]
    graph = needed(df, 3)
    assert list(graph) == [0, 1, 2, 3]
    assert parallel(graph)


@pytest.mark.parametrize(("text", "deps"), [
    ("FROM busybox AS base\nFROM base\n", {0}),
    ("FROM busybox AS Base\nFROM BASE\n", {0}),             # stage names are case-insensitive
    ("FROM busybox AS base\nFROM 0\n", set()),               # FROM takes names, not indexes
    ("FROM busybox AS base\nFROM busybox\nCOPY --from=0 /a /a\n", {0}),
    ("FROM busybox AS base\nFROM busybox\nCOPY --from=alpine /a /a\n", set()),   # an image
    ("FROM busybox AS base\nFROM busybox\nRUN --mount=type=cache,target=/c true\n", set()),
    ("FROM busybox AS base\nFROM busybox\nRUN --mount=type=bind,source=/x,from=base,target=/c true\n", {0}),
    ("FROM busybox AS a\nFROM busybox AS b\nFROM busybox\nCOPY --from=$SRC /a /a\n", {0, 1}),  # could be either
])
def test_dependencies_of_the_last_stage(text: str, deps: set[int]) -> None:
    df = parse_dockerfile(text)
    assert stage_deps(df, df.stages[-1]) == deps


def test_from_image_expansion_is_the_callers() -> None:
    df = parse_dockerfile("ARG BASE=busybox\nFROM busybox AS builder\nFROM ${BASE}\n")
    assert stage_deps(df, df.stages[1]) == {0}  # unexpanded: conservatively all earlier stages
    assert stage_deps(df, df.stages[1], lambda s: "busybox") == set()
    assert stage_deps(df, df.stages[1], lambda s: "builder") == {0}


def test_needed_skips_stages_the_target_does_not_use() -> None:
    df = parse_dockerfile("FROM busybox AS unused\nFROM busybox AS a\nFROM a AS b\nFROM busybox\nCOPY --from=b /x /x\n")
    graph = needed(df, 3)
    assert graph == {1: frozenset(), 2: frozenset({1}), 3: frozenset({2})}
    assert not parallel(graph)  # a chain: nothing to overlap
    assert needed(df, 0) == {0: frozenset()}


def test_ready_follows_the_graph() -> None:
    graph = {0: frozenset(), 1: frozenset(), 2: frozenset({0}), 3: frozenset({1, 2})}
    assert ready(graph, done=(), started=()) == [0, 1]
    assert ready(graph, done=(), started=(0, 1)) == []
    assert ready(graph, done=(0,), started=(0, 1)) == [2]
    assert ready(graph, done=(0, 1, 2), started=(0, 1, 2)) == [3]
    assert ready(graph, done=(0, 1, 2, 3), started=(0, 1, 2, 3)) == []


def test_parallel_needs_two_stages_neither_reaching_the_other() -> None:
    assert not parallel({0: frozenset()})
    assert not parallel({0: frozenset(), 1: frozenset({0}), 2: frozenset({1})})
    assert parallel({0: frozenset(), 1: frozenset({0}), 2: frozenset({0}), 3: frozenset({1, 2})})


def test_a_bad_stage_index_is_left_to_the_step() -> None:
    df = parse_dockerfile("FROM busybox\nCOPY --from=5 /a /a\n")
    assert stage_deps(df, df.stages[0]) == set()
