"""lamina.cli.args: the declarative layer over argparse that the commands are written in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.cliutil import Result, invoke
from lamina.cli.args import (
    Context,
    UsageError,
    argument,
    boolean,
    echo,
    group,
    int_range,
    option,
    pass_context,
    path,
    prompt,
)
from lamina.cli.main import COMMAND_MODULES, cli

seen: dict[str, Any] = {}


@group("tool")
@option("--root", envvar="TOOL_ROOT", type=Path, help="Where.")
@pass_context
def tool(ctx: Context, root: Path | None) -> None:
    """A tool with commands."""
    ctx.obj = {"root": root, "closed": []}


@tool.command("make")
@argument("context", type=path(exists=True, file_okay=False))
@option("-t", "--tag", "tags", multiple=True, help="A tag (repeatable).")
@option("-q", "--quiet", is_flag=True)
@option("--progress", default="auto", envvar="TOOL_PROGRESS", choices=["auto", "plain", "json"], show_default=True)
@option("--timestamp", type=int)
@option("--limit", type=int_range(min=0))
@option("--verify", type=boolean, default=True)
@option("-H", "--human/--no-human", default=True)
@option("-m", "--message", default="")
@pass_context
def make(ctx: Context, **values: Any) -> None:
    """Make something from CONTEXT.

    A second paragraph, kept as written.
    """
    seen.clear()
    seen.update(values, root=ctx.find_root().obj["root"], name=ctx.info_name)


@tool.command("exec", interspersed=False)
@argument("image")
@argument("args", nargs=-1, required=False)
@option("-e", "--env", multiple=True)
@option("--rm", is_flag=True)
def exec_(image: str, args: tuple[str, ...], env: tuple[str, ...], rm: bool) -> None:
    """Run ARGS in IMAGE."""
    seen.clear()
    seen.update(image=image, args=args, env=env, rm=rm)


@tool.command("pair")
@argument("source")
@argument("target", required=False, default="docker.io")
@argument("more", nargs=-1, required=False)
def pair(source: str, target: str, more: tuple[str, ...]) -> None:
    """Two names and the rest."""
    seen.clear()
    seen.update(source=source, target=target, more=more)


@tool.command("fail")
@option("--how", choices=["usage", "exit", "error", "prompt"], default="usage")
@pass_context
def fail(ctx: Context, how: str) -> None:
    """Fail in some way, after holding something that must be let go."""
    ctx.find_root().call_on_close(lambda: ctx.find_root().obj["closed"].append("first"))
    ctx.find_root().call_on_close(lambda: ctx.find_root().obj["closed"].append("second"))
    seen.clear()
    seen["obj"] = ctx.find_root().obj
    if how == "usage":
        raise UsageError("that cannot be combined")
    if how == "exit":
        echo("partial", nl=False)
        echo(" output")
        ctx.exit(7)
    if how == "prompt":
        prompt("Username")
    raise RuntimeError("boom")


@group("sub")
def sub() -> None:
    """A group in the group."""


tool.add_command(sub)


@sub.command("leaf")
@option("-f", "--force", is_flag=True)
def leaf(force: bool) -> None:
    """A leaf under a sub-group."""
    seen.clear()
    seen["force"] = force


def run(*args: str, stdin: str = "") -> Result:
    return invoke(tool, args, stdin=stdin)


def usage_error(result: Result, first_line: str, where: str = "lamina make") -> None:
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"Error: {first_line}\nSee '{where} --help'.\n"


def test_flags_defaults_and_types(tmp_path: Path) -> None:
    assert run("make", str(tmp_path)).exit_code == 0
    assert seen == {"context": tmp_path, "tags": (), "quiet": False, "progress": "auto", "timestamp": None,
                    "limit": None, "verify": True, "human": True, "message": "", "root": None, "name": "make"}
    assert run("--root", "/r", "make", "-qt", "a", "--tag=b", "-tc", str(tmp_path), "--progress", "json",
               "--timestamp", "12", "--limit=0", "--verify", "FALSE", "--no-human", "-m", "").exit_code == 0
    assert seen["tags"] == ("a", "b", "c") and seen["quiet"] is True and seen["progress"] == "json"
    assert (seen["timestamp"], seen["limit"], seen["verify"], seen["human"]) == (12, 0, False, False)
    assert seen["root"] == Path("/r") and seen["message"] == ""
    run("make", "-H", str(tmp_path))
    assert seen["human"] is True


def test_values_that_look_like_flags_are_values(tmp_path: Path) -> None:
    assert run("make", "-m", "--not-a-flag", "-t", "-x", str(tmp_path), "-m", "-1").exit_code == 0
    assert seen["message"] == "-1" and seen["tags"] == ("-x",)
    assert run("make", "--message", "-e a b", str(tmp_path)).exit_code == 0
    assert seen["message"] == "-e a b"


def test_options_and_arguments_interleave_and_double_dash_ends_options(tmp_path: Path) -> None:
    (tmp_path / "-d").mkdir()
    assert run("make", "-q", str(tmp_path), "-t", "x").exit_code == 0
    assert seen["tags"] == ("x",) and seen["quiet"] is True
    assert run("make", "-q", "--", str(tmp_path / "-d")).exit_code == 0
    assert seen["context"] == tmp_path / "-d"


def test_environment_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOL_ROOT", "/from/env")
    monkeypatch.setenv("TOOL_PROGRESS", "plain")
    run("make", str(tmp_path))
    assert seen["root"] == Path("/from/env") and seen["progress"] == "plain"
    run("--root", "/flag", "make", "--progress", "json", str(tmp_path))
    assert seen["root"] == Path("/flag") and seen["progress"] == "json"  # a flag wins over the environment
    monkeypatch.setenv("TOOL_PROGRESS", "")
    run("make", str(tmp_path))
    assert seen["progress"] == "auto"  # empty: unset
    monkeypatch.setenv("TOOL_PROGRESS", "fancy")
    usage_error(run("make", str(tmp_path)),
                "invalid value for --progress (from $TOOL_PROGRESS): 'fancy' (choose from auto, plain, json)")


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    usage_error(run("make", "--foo", str(tmp_path)), "unknown flag: --foo")
    usage_error(run("make", "-qz", str(tmp_path)), "unknown flag: -z")
    usage_error(run("make", "--foo=1", str(tmp_path)), "unknown flag: --foo")
    usage_error(run("make"), '"make" requires exactly 1 argument')
    usage_error(run("make", "a", "b"), '"make" requires exactly 1 argument')
    usage_error(run("make", str(tmp_path), "-t"), "flag needs an argument: -t/--tag")
    usage_error(run("make", str(tmp_path / "nope")), f"invalid value for CONTEXT: directory '{tmp_path / 'nope'}' does not exist")
    (tmp_path / "file").write_text("")
    usage_error(run("make", str(tmp_path / "file")), f"invalid value for CONTEXT: directory '{tmp_path / 'file'}' is a file")
    usage_error(run("make", str(tmp_path), "--progress", "fancy"),
                "invalid value for --progress: 'fancy' (choose from auto, plain, json)")
    usage_error(run("make", str(tmp_path), "--timestamp", "soon"), "invalid value for --timestamp: 'soon' is not an integer")
    usage_error(run("make", str(tmp_path), "--limit", "-1"), "invalid value for --limit: -1 is not >= 0")
    usage_error(run("make", str(tmp_path), "--verify", "maybe"), "invalid value for --verify: 'maybe' is not a valid boolean")
    usage_error(run("make", str(tmp_path), "--quiet=yes"), "argument -q/--quiet: ignored explicit argument 'yes'")
    usage_error(run("pair"), '"pair" requires at least 1 argument', "lamina pair")
    usage_error(run("nake"), "no such command 'nake'. Did you mean 'make'?", "lamina")
    usage_error(run("--nope"), "unknown flag: --nope", "lamina")
    usage_error(run("sub", "twig"), "no such command 'twig'.", "lamina sub")


def test_optional_and_variadic_arguments() -> None:
    run("pair", "a")
    assert seen == {"source": "a", "target": "docker.io", "more": ()}
    run("pair", "a", "b", "c", "d")
    assert seen == {"source": "a", "target": "b", "more": ("c", "d")}


def test_arguments_after_the_first_pass_through_verbatim() -> None:
    assert run("exec", "-e", "A=1", "--rm", "img", "ls", "-la", "--rm", "-e", "--", "--help").exit_code == 0
    assert seen == {"image": "img", "args": ("ls", "-la", "--rm", "-e", "--", "--help"), "env": ("A=1",), "rm": True}
    run("exec", "img")
    assert seen["args"] == ()
    run("exec", "--", "-img-", "x")
    assert seen["image"] == "-img-" and seen["args"] == ("x",)
    usage_error(run("exec", "--bad", "img"), "unknown flag: --bad", "lamina exec")


def test_groups_nest_and_options_belong_to_their_level(tmp_path: Path) -> None:
    assert run("sub", "leaf", "-f").exit_code == 0 and seen == {"force": True}
    usage_error(run("make", "--root", "/r", str(tmp_path)), "unknown flag: --root")  # a group option goes first


def test_help() -> None:
    top = run("--help")
    assert top.exit_code == 0 and top.stderr == ""
    assert top.stdout.startswith("usage: lamina [OPTIONS] COMMAND [ARG...]\n\nA tool with commands.\n")
    assert "\n  make  Make something from CONTEXT.\n" in top.stdout and "\n  sub   A group in the group.\n" in top.stdout
    assert "  -h, --help " in top.stdout and "  --root PATH  Where." in top.stdout
    assert run().stdout == top.stdout and run().exit_code == 0  # no command: the help
    made = run("make", "-h")
    assert made.exit_code == 0 and made.stdout.startswith("usage: lamina make [OPTIONS] CONTEXT\n")
    assert "A second paragraph, kept as written.\n" in made.stdout
    assert "-t, --tag TEXT" in made.stdout and "--progress [auto|plain|json]" in made.stdout
    assert "[default: auto]" in made.stdout and "--no-human" not in made.stdout
    assert run("make", "--no-such", "--help").exit_code == 0  # help first, as click does
    assert run("sub", "--help").stdout.startswith("usage: lamina sub [OPTIONS] COMMAND [ARG...]\n")
    assert run("sub", "leaf", "--help").stdout.startswith("usage: lamina sub leaf [OPTIONS]\n")
    assert run("exec", "img", "--help").stdout == ""  # an argument of the command in the container


def test_context_closes_and_exit_codes() -> None:
    failed = run("fail")
    usage_error(failed, "that cannot be combined", "lamina fail")
    assert seen["obj"]["closed"] == ["second", "first"]  # last registered, first run
    exited = run("fail", "--how", "exit")
    assert (exited.exit_code, exited.stdout) == (7, "partial output\n")
    assert seen["obj"]["closed"] == ["second", "first"]
    with pytest.raises(RuntimeError, match="boom"):  # not ours to handle: main.py's group does that
        run("fail", "--how", "error")
    assert seen["obj"]["closed"] == ["second", "first"]
    aborted = run("fail", "--how", "prompt")
    assert aborted.exit_code == 1 and aborted.stdout == "Username: " and aborted.stderr == "\nAborted!\n"


def test_prompt_asks_again_when_empty() -> None:
    import io

    saved = sys.stdin
    sys.stdin = io.StringIO("\nalice\n")
    try:
        assert prompt("Username") == "alice"
    finally:
        sys.stdin = saved


def test_every_lamina_command_parses_its_help() -> None:
    names = [[name] for name in COMMAND_MODULES] + [["builder", "prune"], ["system", "df"], ["system", "check"],
                                                    ["system", "prune"]]
    for words in names:
        shown = invoke(cli, [*words, "--help"])
        assert shown.exit_code == 0 and shown.stdout.startswith(f"usage: lamina {' '.join(words)} "), words


def test_version_and_usage_errors_of_the_real_command(tmp_path: Path) -> None:
    def lamina(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lamina", "--root", str(tmp_path), *args], capture_output=True,
                              text=True, env={"PYTHONPATH": str(Path(__file__).parents[1] / "src"), "PATH": "/usr/bin:/bin"})

    version = lamina("--version")
    assert (version.returncode, version.stdout, version.stderr) == (0, "lamina, version 0.1.0\n", "")
    bad = lamina("build", "--foo", str(tmp_path))
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "Error: unknown flag: --foo\nSee 'lamina build --help'.\n"
    missing = lamina("rmi")
    assert (missing.returncode, missing.stderr) == (2, "Error: \"rmi\" requires at least 1 argument\n"
                                                      "See 'lamina rmi --help'.\n")
    label = lamina("build", "--label", "novalue", str(tmp_path))
    assert label.returncode == 2 and label.stderr.startswith("Error: invalid value: expected KEY=VALUE, got 'novalue'\n")
