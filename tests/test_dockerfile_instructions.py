"""Node to typed instruction: the happy paths and BuildKit's refusals."""

from __future__ import annotations

import pytest

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
from lamina.errors import DockerfileError


def one(line: str) -> Instruction:
    """The instruction on the last line of a small Dockerfile."""
    nodes = parse(f"FROM scratch\n{line}\n").nodes
    return to_instruction(nodes[-1], "Dockerfile")


def error(line: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        one(line)
    return info.value


def test_from_forms() -> None:
    assert one("FROM --platform=$BUILDPLATFORM golang:1.22 AS Build") == From(
        image="golang:1.22",
        stage_name="build",
        platform="$BUILDPLATFORM",
        line=2,
        original="FROM --platform=$BUILDPLATFORM golang:1.22 AS Build",
    )
    plain = one("from alpine")
    assert isinstance(plain, From) and plain.stage_name is None and plain.platform is None


def test_run_forms() -> None:
    shell = one("RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none echo $HOME")
    assert shell == Run(
        command=("echo $HOME",),
        mounts=("type=cache,target=/c", "type=tmpfs,target=/t"),
        network="none",
        line=2,
        original="RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none echo $HOME",
    )
    exec_form = one('RUN ["/bin/sh", "-c", "echo $X"]')
    assert isinstance(exec_form, Run) and exec_form.json and exec_form.command == ("/bin/sh", "-c", "echo $X")
    insecure = one("RUN --security=insecure true")
    assert isinstance(insecure, Run) and insecure.security == "insecure"


def test_run_heredoc() -> None:
    run = to_instruction(parse("FROM a\nRUN <<EOF\necho hi\nEOF\n").nodes[1])
    assert isinstance(run, Run) and run.heredocs == (Heredoc("EOF", "echo hi\n"),)


def test_cmd_and_entrypoint() -> None:
    assert one('CMD ["a", "b"]') == Cmd(command=("a", "b"), json=True, line=2, original='CMD ["a", "b"]')
    assert one("CMD echo hi") == Cmd(command=("echo hi",), line=2, original="CMD echo hi")
    assert one("ENTRYPOINT []") == Entrypoint(command=(), json=True, line=2, original="ENTRYPOINT []")
    fallback = one("ENTRYPOINT [ '/bin/echo' ]")
    assert isinstance(fallback, Entrypoint) and not fallback.json
    assert fallback.command == ("[ '/bin/echo' ]",)


def test_env_label_arg_pairs_keep_quotes() -> None:
    env = one('ENV A=1 B="x y" C=a\\ b')
    assert isinstance(env, Env) and env.pairs == (("A", "1"), ("B", '"x y"'), ("C", "a\\ b"))
    legacy = one("ENV NAME some value here")
    assert isinstance(legacy, Env) and legacy.pairs == (("NAME", "some value here"),)
    label = one('LABEL "com.example.a b"=c version=1.0')
    assert isinstance(label, Label) and label.pairs == (('"com.example.a b"', "c"), ("version", "1.0"))
    arg = one('ARG A B= C="x y" D=$A')
    assert isinstance(arg, Arg)
    assert arg.pairs == (("A", None), ("B", ""), ("C", '"x y"'), ("D", "$A"))


def test_simple_instructions() -> None:
    assert one("MAINTAINER Jane <j@x>") == Maintainer(
        name="Jane <j@x>", line=2, original="MAINTAINER Jane <j@x>"
    )
    assert one("EXPOSE 80 443/tcp $P") == Expose(
        ports=("80", "443/tcp", "$P"), line=2, original="EXPOSE 80 443/tcp $P"
    )
    assert one("USER 1000:1000") == User(user="1000:1000", line=2, original="USER 1000:1000")
    assert one("WORKDIR /app") == Workdir(path="/app", line=2, original="WORKDIR /app")
    assert one("STOPSIGNAL SIGKILL") == StopSignal(signal="SIGKILL", line=2, original="STOPSIGNAL SIGKILL")
    assert one('SHELL ["/bin/bash", "-c"]') == Shell(
        command=("/bin/bash", "-c"), line=2, original='SHELL ["/bin/bash", "-c"]'
    )


def test_volume_forms() -> None:
    volume = one('VOLUME ["/a", " /b "]')
    assert isinstance(volume, Volume) and volume.paths == ("/a", "/b")
    shell = one("VOLUME /c /d")
    assert isinstance(shell, Volume) and shell.paths == ("/c", "/d")


def test_copy_flags_and_sources() -> None:
    copy = one(
        "COPY --from=build --chown=app:app --chmod=0644 --link --parents --exclude=*.md --exclude=x a b /dst/"
    )
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.dest, copy.from_, copy.chown, copy.chmod) == (
        ("a", "b"),
        "/dst/",
        "build",
        "app:app",
        "0644",
    )
    assert copy.link and copy.parents and copy.excludes == ("*.md", "x")
    json_form = one('COPY ["a b", "/c d/"]')
    assert isinstance(json_form, Copy) and json_form.sources == ("a b",) and json_form.dest == "/c d/"


def test_copy_heredocs_are_not_sources() -> None:
    node = parse("FROM a\nCOPY <<EOF file.txt <<-'EOT' /dir/\nx\nEOF\n\ty\n\tEOT\n").nodes[1]
    copy = to_instruction(node)
    assert isinstance(copy, Copy)
    assert copy.sources == ("file.txt",)
    assert copy.heredocs == (Heredoc("EOF", "x\n"), Heredoc("EOT", "y\n", expand=False, chomp=True))


def test_add_flags() -> None:
    add = one("ADD --checksum=sha256:abc --keep-git-dir=true --chown=1 https://x/y.tgz /")
    assert isinstance(add, Add)
    assert add.checksum == "sha256:abc" and add.keep_git_dir and add.chown == "1"
    assert add.sources == ("https://x/y.tgz",) and add.dest == "/"
    assert add.from_ is None and not add.parents and add.unpack is None
    assert [one(f"ADD {flag} a.tgz /").unpack for flag in ("--unpack", "--unpack=true", "--unpack=false")] == \
        [True, True, False]  # type: ignore[attr-defined]


def test_onbuild() -> None:
    onbuild = one("ONBUILD  COPY --from=x a b")
    assert isinstance(onbuild, Onbuild)
    assert onbuild.expression == "COPY --from=x a b"
    assert onbuild.trigger.keyword == "COPY" and onbuild.trigger.flags == ("--from=x",)
    heredoc = to_instruction(parse("FROM a\nONBUILD RUN <<EOF\nx\nEOF\n").nodes[1])
    assert isinstance(heredoc, Onbuild) and heredoc.expression == "RUN <<EOF\nx\nEOF"


def test_healthcheck_forms() -> None:
    none = one("HEALTHCHECK NONE")
    assert isinstance(none, Healthcheck) and none.test is None
    check = one(
        "HEALTHCHECK --interval=5s --timeout=1m --start-period=0 --start-interval=2s --retries=3 CMD curl -f x"
    )
    assert check == Healthcheck(
        test=("CMD-SHELL", "curl -f x"),
        interval=5_000_000_000,
        timeout=60_000_000_000,
        start_period=0,
        start_interval=2_000_000_000,
        retries=3,
        line=2,
        original=check.original,
    )
    exec_form = one('HEALTHCHECK cmd ["true", "x"]')
    assert isinstance(exec_form, Healthcheck) and exec_form.test == ("CMD", "true", "x")
    assert exec_form.interval is None and exec_form.retries is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("FROM", "FROM requires either one or three arguments"),
        ("FROM a b", "FROM requires either one or three arguments"),
        ("FROM a AS", "FROM requires either one or three arguments"),
        (
            "FROM a AS 1bad!",
            'invalid name for build stage: "1bad!", name can\'t start with a number or contain symbols',
        ),
        ("FROM a TO b", "FROM requires either one or three arguments"),
        ("FROM --foo a", "unknown flag: --foo"),
        ("RUN --foo echo", "unknown flag: --foo"),
        ("RUN --network=bridge x", 'invalid network mode "bridge"'),
        ("RUN --security=lax x", 'security "lax" is not valid'),
        ("CMD --x=1 a", "unknown flag: --x"),
        ("ENV", "ENV requires at least one argument"),
        ("ENV =x", "ENV names can not be blank"),
        ("LABEL =x", "LABEL names can not be blank"),
        ("ARG", "ARG requires at least one argument"),
        ("ARG =x", "ARG names can not be blank"),
        ("MAINTAINER", "MAINTAINER requires exactly one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("USER", "USER requires exactly one argument"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        ('VOLUME ["/a", " "]', "VOLUME specified can not be an empty string"),
        ("SHELL /bin/sh -c", "SHELL requires the arguments to be in JSON form"),
        ("SHELL []", "SHELL requires at least one argument"),
        (
            "COPY a",
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        (
            "ADD a",
            "ADD requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        ("COPY --chmod a b", "missing a value on flag: --chmod"),
        ("COPY --link=maybe a b", "expecting boolean value for flag --link, not: maybe"),
        ("ADD --from=x a b", "unknown flag: --from"),
        ("ADD --parents a b", "unknown flag: --parents"),
        ("ONBUILD", "ONBUILD requires at least one argument"),
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD FROM alpine", "FROM isn't allowed as an ONBUILD trigger"),
        ("ONBUILD maintainer me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK RUN x", 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK --interval=abc CMD true", 'time: invalid duration "abc"'),
        ("HEALTHCHECK --timeout=5 CMD true", 'time: missing unit in duration "5"'),
        ("HEALTHCHECK --interval=10us CMD true", 'Interval "interval" cannot be less than 1ms'),
        ("HEALTHCHECK --retries=x CMD true", 'strconv.ParseInt: parsing "x": invalid syntax'),
        ("HEALTHCHECK --retries=-1 CMD true", "--retries cannot be negative (-1)"),
        (
            "HEALTHCHECK --retries=9999999999 CMD true",
            'strconv.ParseInt: parsing "9999999999": value out of range',
        ),
        ("HEALTHCHECK --foo=1 CMD true", "unknown flag: --foo"),
    ],
)
def test_errors(line: str, message: str) -> None:
    err = error(line)
    assert err.message == message
    assert err.line == 2


def test_copy_heredoc_destination_is_refused() -> None:
    node = parse("FROM a\nCOPY a <<EOF\nx\nEOF\n").nodes[1]
    with pytest.raises(DockerfileError, match="COPY cannot accept a heredoc as a destination"):
        to_instruction(node)


def test_error_carries_file() -> None:
    node = parse("FROM a\nUSER").nodes[1]
    with pytest.raises(DockerfileError) as info:
        to_instruction(node, "build/Dockerfile")
    assert str(info.value) == "build/Dockerfile:2: USER requires exactly one argument"


def test_unknown_keyword_node() -> None:
    trigger = parse("FROM a\nONBUILD FOO bar").nodes[1].sub
    assert trigger is not None
    with pytest.raises(DockerfileError, match="unknown instruction: FOO"):
        to_instruction(trigger)


def test_healthcheck_none_ignores_flags_like_buildkit() -> None:
    none = one("HEALTHCHECK --interval=abc NONE")
    assert isinstance(none, Healthcheck) and none.test is None
