"""The parser wrapper: what it adds to, and fixes in, the `dockerfile` package."""

from __future__ import annotations

import pytest

from lamina.dockerfile.parser import Directives, Heredoc, Node, parse
from lamina.errors import DockerfileError


def nodes(text: str | bytes) -> tuple[Node, ...]:
    return parse(text).nodes


def test_basic_nodes_and_lines() -> None:
    first, second = nodes("FROM alpine AS base\nrun --mount=type=cache,target=/c echo hi \\\n  there\n")
    assert first == Node(
        "FROM", ("alpine", "AS", "base"), original="FROM alpine AS base", start_line=1, end_line=1
    )
    assert second.keyword == "RUN"
    assert second.args == ("echo hi   there",)
    assert second.flags == ("--mount=type=cache,target=/c",)
    assert (second.start_line, second.end_line) == (2, 3)


def test_json_form_and_fallback() -> None:
    exec_form, fallback = nodes('FROM a\nCMD ["echo", "a\\u0041"]\nCMD [\'x\']').__getitem__(slice(1, 3))
    assert exec_form.json and exec_form.args == ("echo", "aA")
    assert not fallback.json and fallback.args == ("['x']",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a", Directives()),
        ("# syntax=docker/dockerfile:1\nFROM a", Directives(syntax="docker/dockerfile:1")),
        ("# escape=`\nFROM a", Directives(escape="`")),
        ("  #  ESCAPE = `  \nFROM a", Directives(escape="`")),
        ("# check=skip=all\n# escape=`\nFROM a", Directives(escape="`", check="skip=all")),
        ("# a comment\n# escape=`\nFROM a", Directives()),
        ("\n# escape=`\nFROM a", Directives()),
        ("# unknown=x\n# escape=`\nFROM a", Directives()),
        ("FROM a\n# escape=`", Directives()),
        ("\ufeff# escape=`\r\nFROM a", Directives(escape="`")),
    ],
)
def test_directives(text: str, expected: Directives) -> None:
    assert parse(text).directives == expected


def test_escape_directive_changes_continuation() -> None:
    (_, run) = nodes("# escape=`\nFROM a\nRUN dir c:\\ `\n  /w")
    assert run.args == ("dir c:\\   /w",)
    (_, run) = nodes("# check=error=true\n# escape=`\nFROM a\nRUN a `\n b")
    assert run.args == ("a  b",)


def test_directive_after_comment_is_a_comment() -> None:
    (_, run, _) = nodes("# note\n# escape=`\nFROM a\nRUN a `\nRUN b")
    assert run.args == ("a `",)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("# escape=`\n# escape=`\nFROM a", "only one escape parser directive can be used", 2),
        ("# escape=x\nFROM a", "invalid escape token 'x' does not match ` or \\", 1),
    ],
)
def test_directive_errors(text: str, message: str, line: int) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert (info.value.message, info.value.line) == (message, line)


def test_heredoc_plain() -> None:
    (_, run) = nodes("FROM a\nRUN <<EOF\necho $HOME\nEOF\n")
    assert run.heredocs == (Heredoc("EOF", "echo $HOME\n", expand=True, chomp=False, fd=0),)
    assert run.args == ("<<EOF",)
    assert (run.start_line, run.end_line) == (2, 4)


def test_heredoc_chomp_strips_leading_tabs() -> None:
    (_, run) = nodes("FROM a\nRUN <<-EOF\n\techo hi\n\t\tx\n  y\n\tEOF\n")
    assert run.heredocs == (Heredoc("EOF", "echo hi\nx\n  y\n", expand=True, chomp=True),)


@pytest.mark.parametrize("opener", ['<<"EOF"', "<<'EOF'", "<<E'O'F", '<<-"EOF"'])
def test_quoted_heredoc_does_not_expand(opener: str) -> None:
    (_, copy) = nodes(f"FROM a\nCOPY {opener} /x\n$A\nEOF\n")
    assert copy.heredocs[0].name == "EOF"
    assert copy.heredocs[0].expand is False


def test_escaped_heredoc_name_still_expands() -> None:
    # BuildKit only counts quote characters, so `<<E\OF` expands.
    (_, run) = nodes("FROM a\nRUN <<E\\OF\nx\nEOF\n")
    assert run.heredocs[0].expand is True


def test_several_heredocs_with_fds() -> None:
    (_, run) = nodes("FROM a\nRUN <<A cat - && cat /dev/fd/3 3<<-'B'\naaa\nA\n\tbbb\nB\n")
    assert run.heredocs == (
        Heredoc("A", "aaa\n", expand=True, chomp=False, fd=0),
        Heredoc("B", "bbb\n", expand=False, chomp=True, fd=3),
    )


def test_quoted_heredoc_lookalike_is_not_a_heredoc() -> None:
    (_, run, after) = nodes("FROM a\nRUN echo '<<EOF'\nRUN x")
    assert run.heredocs == () and after.args == ("x",)


def test_copy_with_two_heredocs() -> None:
    (_, copy) = nodes("FROM a\nCOPY <<EOF <<-EOT /dir/\nx\nEOF\n\tb\n\tEOT\n")
    assert [(h.name, h.content, h.chomp) for h in copy.heredocs] == [
        ("EOF", "x\n", False),
        ("EOT", "b\n", True),
    ]


def test_crlf_and_bom() -> None:
    (frm, run) = nodes(b"\xef\xbb\xbfFROM a\r\nRUN echo hi \\\r\n  there\r\n")
    assert frm.args == ("a",)
    assert run.args == ("echo hi   there",)


def test_crlf_heredoc_body_keeps_carriage_returns_like_buildkit() -> None:
    (_, run) = nodes("FROM a\r\nRUN <<EOF\r\nline1\r\nEOF\r\n")
    assert run.heredocs[0].content == "line1\r\n"


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n", "# syntax=x\n", b""])
def test_empty_dockerfile(text: str | bytes) -> None:
    with pytest.raises(DockerfileError, match="the Dockerfile cannot be empty"):
        parse(text)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("FROM a\nRUN echo \x00 hi", "NUL byte", 2),
        (b"FROM a\n\nRUN \xff", "not valid UTF-8", 3),
        ("FROM a\nRUN \udcff", "unpaired surrogate", 2),
    ],
)
def test_bad_bytes_are_clean_errors(text: str | bytes, message: str, line: int) -> None:
    with pytest.raises(DockerfileError, match=message) as info:
        parse(text, file="df")
    assert (info.value.line, info.value.file) == (line, "df")


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("FROM a\nFOOBAR baz", "unknown instruction: FOOBAR", 2),
        ("FROM a\n\nfoobar", "unknown instruction: FOOBAR", 3),
        ("FROM a\nCMD <<EOF\nx\nEOF", "unknown instruction: X", 3),
        ("FROM a\nRUN x\nENV A\nRUN y", "ENV must have two arguments", 3),
        ("FROM a\nLABEL a\n", "LABEL must have two arguments", 2),
        (
            "FROM a\nENV A=1 \\\n  B",
            'Syntax error - can\'t find = in "B". Must be of the form: name=value',
            2,
        ),
        ('FROM a\nRUN ["a", 1]', "when using JSON array syntax, arrays must be comprised of strings only", 2),
        ("FROM a\nRUN <<EOF\nx\nEOF\nRUN x\nRUN <<EOF\nnever\n", "unterminated heredoc", 6),
    ],
)
def test_parse_errors_are_located(text: str, message: str, line: int) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert (info.value.message, info.value.line) == (message, line)


def test_onbuild_trigger_keeps_flags_and_heredocs() -> None:
    (_, onbuild, after) = nodes('FROM a\nONBUILD COPY --from=x <<-"EOF" /y\n\thi $x\n\tEOF\nRUN x')
    assert onbuild.keyword == "ONBUILD"
    trigger = onbuild.sub
    assert trigger is not None
    assert trigger.keyword == "COPY"
    assert trigger.flags == ("--from=x",)
    assert trigger.heredocs == (Heredoc("EOF", "hi $x\n", expand=False, chomp=True),)
    assert (trigger.start_line, trigger.end_line) == (2, 4)
    assert onbuild.args == ("COPY", '<<-"EOF"', "/y")
    assert after.start_line == 5


def test_onbuild_trigger_with_continuation_and_escape() -> None:
    (_, onbuild) = nodes("# escape=`\nFROM a\nonbuild RUN echo `\n  c:\\x")
    assert onbuild.sub is not None
    assert onbuild.sub.args == ("echo   c:\\x",)
    assert onbuild.sub.original == "RUN echo   c:\\x"


def test_onbuild_nesting_and_unknown_trigger_are_left_to_the_converter() -> None:
    (_, nested, unknown, empty) = nodes("FROM a\nONBUILD ONBUILD RUN x\nONBUILD FOO bar\nONBUILD")
    assert nested.sub is not None and nested.sub.keyword == "ONBUILD"
    assert nested.sub.sub is not None and nested.sub.sub.keyword == "RUN"
    assert unknown.sub is not None and unknown.sub.keyword == "FOO"
    assert empty.sub is None and empty.args == ()


def test_parsed_file_records_the_file_name() -> None:
    assert parse("FROM a", file="sub/Dockerfile.dev").file == "sub/Dockerfile.dev"
