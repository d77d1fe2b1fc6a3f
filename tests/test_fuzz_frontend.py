"""Property-based fuzzing of the Dockerfile front end (issue #8: hostile Dockerfiles).

Whatever bytes a user or an attacker hands us, parsing and word expansion either succeed or
raise a :class:`LaminaError` (which the CLI prints as one line): never another exception, never
a hang. Where the result is predictable, it is checked against a simple model.
"""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.dockerfile.expand import expand_tracking
from lamina.dockerfile.shell import Lexer
from lamina.dockerfile.stages import parse_dockerfile
from lamina.errors import LaminaError

# derandomized so CI is repeatable; raise HYPOTHESIS max_examples locally to search harder
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

KEYWORDS = ["FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
            "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"]

# pieces that exercise the parser's corners: continuations, heredocs, JSON, flags, directives
FRAGMENTS = ["\\\n", "<<EOF\n", "<<-'EOT'\n", "EOF\n", "[\"a\", \"b\"]", "[", "]", "\"", "'", "$", "${",
             "}", "${A:-x}", "${A:+y}", "${A#*}", "--from=", "--mount=type=cache,target=/c", "# escape=`\n",
             "# syntax=docker/dockerfile:1\n", "`\n", "\t", " ", "=", "AS ", "\x00", "\r\n", "\ufeff", "é"]

line = st.builds(lambda kw, parts: kw + " " + "".join(parts),
                 st.sampled_from(KEYWORDS) | st.text(string.ascii_letters, min_size=1, max_size=8),
                 st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=12), max_size=8))
dockerfile_text = st.builds(lambda first, rest: "\n".join([first, *rest]),
                            st.sampled_from(["FROM busybox", "ARG X=1\nFROM scratch", "# escape=`\nFROM a"]),
                            st.lists(line, max_size=12))


def _parse(text: str | bytes) -> object:
    try:
        return parse_dockerfile(text, "Dockerfile")
    except LaminaError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip() or message.startswith("Dockerfile")
        return exc


@SETTINGS
@given(dockerfile_text)
def test_structured_dockerfiles_parse_or_fail_cleanly(text: str) -> None:
    _parse(text)


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    _parse(b"FROM busybox\n" + data)


@SETTINGS
@given(dockerfile_text)
def test_instructions_expand_or_fail_cleanly(text: str) -> None:
    df = _parse(text)
    if isinstance(df, LaminaError):
        return
    lexer = Lexer(df.directives.escape)  # type: ignore[attr-defined]
    env = {"A": "1", "B": "two words", "EMPTY": ""}
    for stage in df.stages:  # type: ignore[attr-defined]
        for instr in stage.instructions:
            with contextlib.suppress(LaminaError):
                expand_tracking(instr, env, lexer, file="Dockerfile")


words = st.lists(st.sampled_from(["$", "${", "}", ":-", ":+", "-", "+", "#", "##", "%", "%%", "/", "\\",
                                  "'", "\"", "A", "B", "EMPTY", "UNSET", "*", "?", "[", "]", " ", "x"]),
                 max_size=14).map("".join)


@SETTINGS
@given(words, st.sampled_from(["\\", "`"]))
def test_word_expansion_returns_text_or_a_lamina_error(word: str, escape: str) -> None:
    lexer = Lexer(escape)
    env = {"A": "alpha", "B": "b c", "EMPTY": ""}
    try:
        out = lexer.expand_word(word, env)
    except LaminaError:
        return
    assert isinstance(out, str)
    try:
        fields = lexer.expand_words(word, env)
    except LaminaError:
        return
    assert all(isinstance(f, str) for f in fields)


plain = st.text(string.ascii_letters + string.digits + "/._-:@,", max_size=20)


@SETTINGS
@given(st.lists(st.tuples(plain, st.sampled_from(["A", "B", "EMPTY", "UNSET"])), max_size=6), plain)
def test_expansion_of_plain_text_and_references_matches_substitution(parts: list[tuple[str, str]],
                                                                      tail: str) -> None:
    env = {"A": "alpha", "B": "b-c", "EMPTY": ""}
    word = "".join(f"{text}${{{name}}}" for text, name in parts) + tail
    expected = "".join(text + env.get(name, "") for text, name in parts) + tail
    assert Lexer("\\").expand_word(word, env) == expected


@pytest.mark.parametrize("text", [
    "FROM busybox\nRUN <<EOF\necho unterminated\n",
    "FROM busybox\nCMD [\"unterminated\",\n",
    "FROM busybox\nLABEL " + "a" * 70000 + "=1\n",
    "FROM busybox\nRUN echo \\\n",
    "\ufeffFROM busybox\n",
    "FROM busybox\n\x00\n",
])
def test_hostile_dockerfiles_never_raise_other_errors(text: str) -> None:
    _parse(text)
