"""Expansion of typed instructions: which words, against which env."""

from __future__ import annotations

import pytest

from lamina.dockerfile.expand import expand, expand_tracking
from lamina.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    to_instruction,
)
from lamina.dockerfile.parser import Heredoc, parse
from lamina.dockerfile.shell import Lexer
from lamina.errors import ExpansionError

ENV = {"A": "old", "DIR": "/srv", "USER": "app", "P": "80 443/tcp", "EMPTY": ""}


def instr(line: str, escape: str = "\\") -> Instruction:
    prefix = "# escape=`\n" if escape == "`" else ""
    nodes = parse(f"{prefix}FROM scratch\n{line}\n").nodes
    return to_instruction(nodes[-1])


def run(line: str, env: dict[str, str] | None = None, escape: str = "\\") -> Instruction:
    return expand(instr(line, escape), ENV if env is None else env, Lexer(escape))


def test_env_pairs_see_the_env_from_before_the_line() -> None:
    result = run('ENV A=new B=$A C="${A} x" ${DIR}=key')
    assert isinstance(result, Env)
    assert result.pairs == (("A", "new"), ("B", "old"), ("C", "old x"), ("/srv", "key"))


def test_label_keys_and_values() -> None:
    result = run('LABEL "com.x.user"=$USER other="a b"')
    assert isinstance(result, Label) and result.pairs == (("com.x.user", "app"), ("other", "a b"))


def test_arg_defaults_expand_but_missing_defaults_stay_none() -> None:
    result = run('ARG X=$DIR/x Y Z="q q"')
    assert isinstance(result, Arg) and result.pairs == (("X", "/srv/x"), ("Y", None), ("Z", "q q"))


def test_expose_splits_fields() -> None:
    result = run("EXPOSE $P 8080")
    assert isinstance(result, Expose) and result.ports == ("80", "443/tcp", "8080")


def test_simple_words() -> None:
    assert run("USER $USER:$USER") == User(user="app:app", line=2, original="USER $USER:$USER")
    assert isinstance(w := run("WORKDIR ${DIR}/app"), Workdir) and w.path == "/srv/app"
    assert isinstance(s := run("STOPSIGNAL ${SIG:-SIGTERM}"), StopSignal) and s.signal == "SIGTERM"
    assert isinstance(v := run('VOLUME ["$DIR/a", "${DIR}/b"]'), Volume) and v.paths == ("/srv/a", "/srv/b")


def test_from_expands_image_and_platform_not_name() -> None:
    env = {"PLAT": "linux/arm64", "IMG": "x", "name": "no"}
    result = expand(instr("FROM --platform=$PLAT $IMG:${TAG:-1} AS name"), env, Lexer())
    assert isinstance(result, From)
    assert (result.image, result.platform, result.stage_name) == ("x:1", "linux/arm64", "name")


def test_copy_expands_paths_and_flags() -> None:
    result = run("COPY --from=$A --chown=$USER --chmod=${MODE:-644} --exclude=$DIR/*.md $DIR/a 'b' ${DIR}/")
    assert isinstance(result, Copy)
    assert result.sources == ("/srv/a", "b")
    assert result.dest == "/srv/"
    assert (result.from_, result.chown, result.chmod) == ("old", "app", "644")
    assert result.excludes == ("/srv/*.md",)


def test_add_expands_like_copy() -> None:
    result = run("ADD --chown=$USER $DIR/x.tgz /")
    assert isinstance(result, Add) and result.sources == ("/srv/x.tgz",) and result.chown == "app"


def test_add_checksum_expands() -> None:
    result = run("ADD --checksum=sha256:$SUM https://h/f /f", {"SUM": "ab12"})
    assert isinstance(result, Add) and result.checksum == "sha256:ab12"
    assert expand_tracking(instr("ADD --checksum=${C} https://h/f /f"), {"C": "x"}, Lexer("\\"))[1] == {"C"}


def test_copy_heredoc_bodies_expand_unless_quoted() -> None:
    text = "FROM a\nCOPY <<EOF <<'RAW' /d/\nname=${A} \"q\" \\$A\nEOF\nkeep $A\nRAW\n"
    copy = to_instruction(parse(text).nodes[1])
    result, names = expand_tracking(copy, ENV, Lexer())
    assert isinstance(result, Copy)
    assert result.heredocs == (Heredoc("EOF", 'name=old "q" $A\n'), Heredoc("RAW", "keep $A\n", expand=False))
    assert names == frozenset({"A"})


def test_heredoc_bodies_use_backslash_even_with_backtick_escape() -> None:
    text = "# escape=`\nFROM a\nCOPY <<EOF /x\n`$A \\$A\nEOF\n"
    copy = to_instruction(parse(text).nodes[1])
    result = expand(copy, ENV, Lexer("`"))
    assert isinstance(result, Copy) and result.heredocs[0].content == "`old $A\n"


def test_copy_words_split_before_escapes_like_buildkit() -> None:
    # BuildKit cuts COPY's words on whitespace first, so `b\ c` is two words.
    result = run("COPY b\\ c /d/")
    assert isinstance(result, Copy) and result.sources == ("b", "c")


def test_backtick_escape_in_words() -> None:
    result = run("WORKDIR C:\\$A`$A", escape="`")
    assert isinstance(result, Workdir) and result.path == "C:\\old$A"


@pytest.mark.parametrize(
    "line",
    [
        "RUN echo $A",
        'RUN ["echo", "$A"]',
        "CMD echo $A",
        "ENTRYPOINT $A",
        'SHELL ["$A"]',
        "HEALTHCHECK CMD $A",
        "MAINTAINER $A",
        "ONBUILD RUN echo $A",
    ],
)
def test_not_expanded(line: str) -> None:
    original = instr(line)
    assert isinstance(original, Run | Cmd | Entrypoint | Shell | Healthcheck | Maintainer | Onbuild)
    result, names = expand_tracking(original, ENV, Lexer())
    assert result is original
    assert names == frozenset()


def test_run_heredocs_are_left_to_the_shell() -> None:
    node = parse("FROM a\nRUN <<EOF\necho $A\nEOF\n").nodes[1]
    original = to_instruction(node)
    assert expand(original, ENV, Lexer()) is original


def test_tracking_reports_set_and_unset_names() -> None:
    _, names = expand_tracking(instr("ENV X=$A Y=${NOPE:-1} Z=$$"), ENV, Lexer())
    assert names == frozenset({"A", "NOPE", "$"})


def test_required_variable_error_is_located() -> None:
    with pytest.raises(ExpansionError, match="NEEDED: must be set by the caller") as info:
        expand(instr('ENV OUT="${NEEDED:?must be set by the caller}"'), {}, Lexer(), file="df")
    assert (info.value.file, info.value.line) == ("df", 2)


def test_bad_substitution_is_an_expansion_error() -> None:
    with pytest.raises(ExpansionError, match="bad substitution"):
        run("WORKDIR ${}")
