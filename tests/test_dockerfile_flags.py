"""Instruction flags, checked like BuildKit's BFlags."""

from __future__ import annotations

import pytest

from lamina.dockerfile.flags import FlagKind, parse_flags
from lamina.errors import DockerfileError

ACCEPTED = {"from": FlagKind.STRING, "link": FlagKind.BOOL, "mount": FlagKind.STRINGS}


def test_values() -> None:
    flags = parse_flags(("--from=build", "--link", "--mount=a", "--mount=b"), ACCEPTED)
    assert flags.string("from") == "build"
    assert flags.boolean("link") is True
    assert flags.strings("mount") == ("a", "b")
    assert flags.string("missing") is None and flags.strings("missing") == ()


@pytest.mark.parametrize(
    ("word", "expected"), [("--link=TRUE", True), ("--link=false", False), ("--link", True)]
)
def test_boolean_values(word: str, expected: bool) -> None:
    assert parse_flags((word,), ACCEPTED).boolean("link") is expected


def test_empty_string_value_is_allowed() -> None:
    assert parse_flags(("--from=",), ACCEPTED).string("from") == ""


def test_double_dash_ends_flags() -> None:
    assert parse_flags(("--", "--nope"), ACCEPTED).values == {}


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (("--foo",), "unknown flag: --foo"),
        (("--foo=bar",), "unknown flag: --foo"),
        (("--from=a", "--from=b"), "duplicate flag specified: --from"),
        (("--from",), "missing a value on flag: --from"),
        (("--link=",), "missing a value on flag: --link"),
        (("--link=yes",), "expecting boolean value for flag --link, not: yes"),
        (("-x",), "arg should start with -- : -x"),
    ],
)
def test_errors(words: tuple[str, ...], message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_flags(words, ACCEPTED)
    assert info.value.message == message
