"""Stages: global ARGs, one stage per FROM, names and targets."""

from __future__ import annotations

import pytest

from lamina.dockerfile.instructions import Arg, Copy, Run
from lamina.dockerfile.stages import find_stage, parse_dockerfile, stage_index
from lamina.errors import DockerfileError

MULTI = """\
# syntax=docker/dockerfile:1
ARG BASE=alpine
ARG TAG
FROM $BASE:${TAG:-3} AS Build
RUN make
FROM scratch
COPY --from=build /out /
FROM build AS test
RUN make test
"""


def test_stages_and_global_args() -> None:
    df = parse_dockerfile(MULTI, file="Dockerfile.multi")
    assert df.file == "Dockerfile.multi"
    assert df.directives.syntax == "docker/dockerfile:1"
    assert [a.pairs for a in df.global_args] == [(("BASE", "alpine"),), (("TAG", None),)]
    assert [(s.name, s.index, s.line) for s in df.stages] == [("build", 0, 4), (None, 1, 6), ("test", 2, 8)]
    assert df.stages[0].from_.image == "$BASE:${TAG:-3}"
    assert isinstance(df.stages[0].instructions[0], Run)
    assert isinstance(df.stages[1].instructions[0], Copy)


def test_arg_inside_a_stage_is_not_global() -> None:
    df = parse_dockerfile("FROM a\nARG X=1\n")
    assert df.global_args == ()
    assert isinstance(df.stages[0].instructions[0], Arg)


def test_find_stage_is_case_insensitive() -> None:
    df = parse_dockerfile(MULTI)
    assert find_stage(df, "BUILD") == 0
    assert find_stage(df, "test") == 2
    with pytest.raises(DockerfileError, match="target stage nope could not be found"):
        find_stage(df, "nope")


def test_stage_index_resolves_names_and_numbers() -> None:
    df = parse_dockerfile(MULTI)
    assert stage_index(df, "Build") == 0
    assert stage_index(df, "1") == 1
    assert stage_index(df, "alpine:3") is None
    assert stage_index(df, "test", before=1) is None  # a later stage is not visible
    with pytest.raises(DockerfileError, match="invalid stage index 2"):
        stage_index(df, "2", before=2)


def test_duplicate_stage_names_are_accepted_and_the_last_wins() -> None:
    # BuildKit accepts a reused stage name; a reference after both means the later stage.
    df = parse_dockerfile("FROM a AS x\nFROM b AS X\nFROM c\nCOPY --from=x / /\n")
    assert [s.name for s in df.stages] == ["x", "x", None]
    assert stage_index(df, "x", before=2) == 1
    assert find_stage(df, "X") == 1


def test_stage_naming_itself_is_a_cycle() -> None:
    df = parse_dockerfile("FROM a AS me\nCOPY --from=me /x /x\n")
    with pytest.raises(DockerfileError, match="circular dependency detected on stage: me"):
        stage_index(df, "me", before=0)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("RUN x\nFROM a", "no build stage in current context", 1),
        ("ARG A\nENV B=1\nFROM a", "no build stage in current context", 2),
        ("FROM a AS 1bad!\nRUN true", "invalid name for build stage", 1),
        ("ARG A=1", "dockerfile contains no stages to build", None),
        ("FROM a\nFOOBAR baz", "unknown instruction: FOOBAR", 2),
        ("", "the Dockerfile cannot be empty", None),
    ],
)
def test_errors(text: str, message: str, line: int | None) -> None:
    with pytest.raises(DockerfileError, match=message) as info:
        parse_dockerfile(text)
    assert info.value.line == line


def test_valid_stage_names() -> None:
    df = parse_dockerfile("FROM a AS a-b_c.d1\nFROM a as Z9")
    assert [s.name for s in df.stages] == ["a-b_c.d1", "z9"]
