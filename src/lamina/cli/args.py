"""lamina's command-line layer: click's decorator style over the standard library's argparse.

Why not click: importing it costs 15-20 ms, a large share of a short command's start-up (a cached
build, a small push); argparse costs ~1.5 ms. Why not bare argparse: commands stay declarative
(``@command``, ``@option``, ``@argument``, ``@pass_context``), a :class:`Context` carries the store
from the root to its subcommand, subcommands can be looked up lazily, and usage errors read like
docker's: one line naming the problem, one pointing at ``--help``, exit 2.

argparse only parses the options: :meth:`Command.parse` first splits the arguments itself, as
click does (options and arguments may be interleaved; ``--`` ends the options; a command that is
not *interspersed*, such as ``run`` or a group, passes everything after its first argument through
verbatim), and hands argparse every value-taking option as ``--long=VALUE``, so that values which
start with ``-`` are values, not unknown flags. Conversions, choices, environment defaults and
argument counts are checked here, to word their errors in one style.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
Converter = Callable[[str], Any]

_PARAMS = "__lamina_params__"            # the options and arguments a function's decorators declared
_PASS_CONTEXT = "__lamina_pass_context__"


class UsageError(Exception):
    """The command line is wrong: ``Error: <message>`` and a pointer to ``--help`` on stderr, exit 2."""

    exit_code = 2

    def __init__(self, message: str, ctx: Context | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ctx = ctx


class BadParameter(UsageError):
    """A value the command cannot use, named by its flag or argument when ``param_hint`` says which."""

    def __init__(self, message: str, ctx: Context | None = None, param_hint: str | None = None) -> None:
        super().__init__(f"invalid value for {param_hint}: {message}" if param_hint else f"invalid value: {message}",
                         ctx)


class Abort(Exception):
    """Input ended at a prompt: ``Aborted!`` and exit 1."""


def echo(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print to stdout (or stderr) and flush at once, so that both streams interleave in order.

    The stream is looked up on each call, so a test that swaps ``sys.stdout`` sees the output.
    """
    stream = sys.stderr if err else sys.stdout
    stream.write(f"{message}\n" if nl else message)
    stream.flush()


def prompt(text: str, *, hide_input: bool = False) -> str:
    """Ask on the terminal until the answer is not empty (``hide_input``: without echoing it)."""
    while True:
        try:
            if hide_input:
                import getpass

                answer = getpass.getpass(f"{text}: ")
            else:
                answer = input(f"{text}: ")
        except EOFError:
            echo(err=True)
            raise Abort() from None
        if answer:
            return answer


# -- value types: str -> value, ValueError with a readable message when the text does not fit

def integer(value: str) -> int:
    """An integer, with a message that names the text (``int``'s own names ``int()``)."""
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an integer") from None


def int_range(*, min: int | None = None, max: int | None = None) -> Converter:
    """An integer within bounds (inclusive)."""
    def convert(value: str) -> int:
        number = integer(value)
        if (min is not None and number < min) or (max is not None and number > max):
            bounds = " and ".join(s for s in (f">= {min}" if min is not None else "",
                                              f"<= {max}" if max is not None else "") if s)
            raise ValueError(f"{number} is not {bounds}")
        return number
    convert.metavar = "INTEGER"  # type: ignore[attr-defined]
    return convert


integer.metavar = "INTEGER"  # type: ignore[attr-defined]

_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")


def boolean(value: str) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case), as docker's and click's boolean flags take them."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a valid boolean")


boolean.metavar = "BOOL"  # type: ignore[attr-defined]


def path(*, exists: bool = False, file_okay: bool = True, dir_okay: bool = True) -> Converter:
    """A :class:`~pathlib.Path`; with ``exists`` it must exist, and it must be of an allowed kind when it does."""
    kind = "file" if not dir_okay else "directory" if not file_okay else "path"

    def convert(value: str) -> Path:
        try:
            is_dir = os.path.isdir(value) if os.path.lexists(value) else None
        except OSError:
            is_dir = None
        if is_dir is None:
            if exists:
                raise ValueError(f"{kind} {value!r} does not exist")
        elif is_dir and not dir_okay:
            raise ValueError(f"{kind} {value!r} is a directory")
        elif not is_dir and not file_okay:
            raise ValueError(f"{kind} {value!r} is a file")
        return Path(value)
    convert.metavar = "PATH"  # type: ignore[attr-defined]
    return convert


def _converter(kind: Converter | type | None) -> Converter | None:
    """Builtin types as converters with readable errors: ``int`` names the text, ``Path`` is a path."""
    if kind is int:
        return integer
    if kind is Path:
        return path()
    return kind


def _metavar(kind: Converter | None) -> str:
    return str(getattr(kind, "metavar", "TEXT"))


# -- declarations

class Option:
    """A flag (``-q``), a flag pair (``--human/--no-human``) or an option with a value (``-t NAME``)."""

    def __init__(self, decls: Sequence[str], *, default: Any = None, multiple: bool = False, is_flag: bool = False,
                 type: Converter | type | None = None, choices: Sequence[str] | None = None,
                 envvar: str | None = None, metavar: str | None = None, help: str = "",
                 show_default: bool = False, version: str | None = None) -> None:
        names = [d for d in decls if not d.startswith("-")]
        flags = [d for d in decls if d.startswith("-")]
        self.on = [f.split("/")[0] for f in flags]
        self.off = [f.split("/", 1)[1] for f in flags if "/" in f]
        longs = [f for f in self.on if f.startswith("--")] or self.on
        self.dest = names[0] if names else max(longs, key=len).lstrip("-").replace("-", "_")
        self.is_flag = is_flag or bool(self.off) or version is not None
        self.multiple = multiple
        self.default = () if multiple and default is None else False if is_flag and default is None else default
        self.convert = _converter(type)
        self.choices = tuple(choices) if choices is not None else None
        self.envvar = envvar
        self.metavar = metavar or (f"[{'|'.join(self.choices)}]" if self.choices else _metavar(self.convert))
        self.help = help + (f" [default: {default}]" if show_default and default is not None else "")
        self.version = version

    @property
    def label(self) -> str:
        """How an error names it: the long flag."""
        return max(self.on, key=len)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Declare it to argparse, which collects raw text: conversion and defaults are :meth:`value`'s."""
        text = self.help.replace("%", "%%")  # argparse %-formats help text
        if self.version is not None:
            parser.add_argument(*self.on, action="version", version=self.version, help=text)
        elif self.off:
            parser.add_argument(*self.on, dest=self.dest, action="store_const", const=True, default=None, help=text)
            parser.add_argument(*self.off, dest=self.dest, action="store_const", const=False, default=None,
                                help=argparse.SUPPRESS)
        elif self.is_flag:
            parser.add_argument(*self.on, dest=self.dest, action="store_true", default=None, help=text)
        else:
            parser.add_argument(*self.on, dest=self.dest, action="append" if self.multiple else "store",
                                default=None, metavar=self.metavar, help=text)

    def value(self, given: Any) -> Any:
        """The value the command receives: what was given, else the environment's, else the default."""
        if given is None and self.envvar and os.environ.get(self.envvar):
            return self._check(os.environ[self.envvar], f"{self.label} (from ${self.envvar})")
        if given is None:
            return self.default
        if self.is_flag:
            return given
        if self.multiple:
            return tuple(self._check(v, self.label) for v in given)
        return self._check(given, self.label)

    def _check(self, text: str, hint: str) -> Any:
        if self.choices is not None and text not in self.choices:
            raise BadParameter(f"{text!r} (choose from {', '.join(self.choices)})", param_hint=hint)
        if self.convert is None:
            return text
        try:
            return self.convert(text)
        except ValueError as exc:
            raise BadParameter(str(exc), param_hint=hint) from None

    @property
    def takes_value(self) -> bool:
        return not self.is_flag


class Argument:
    """A positional argument: required, optional (``required=False``) or the rest (``nargs=-1``)."""

    def __init__(self, name: str, *, required: bool = True, nargs: int = 1, type: Converter | type | None = None,
                 default: Any = None) -> None:
        if nargs not in (1, -1):
            raise ValueError("nargs is 1 or -1")
        self.dest = name
        self.required = required
        self.variadic = nargs == -1
        self.convert = _converter(type)
        self.default = () if self.variadic and default is None else default

    @property
    def metavar(self) -> str:
        name = self.dest.upper()
        if self.variadic:
            return f"{name}..." if self.required else f"[{name}...]"
        return name if self.required else f"[{name}]"

    def value(self, text: str) -> Any:
        if self.convert is None:
            return text
        try:
            return self.convert(text)
        except ValueError as exc:
            raise BadParameter(str(exc), param_hint=self.metavar.strip("[].")) from None


def _declare(param: Option | Argument) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        if not hasattr(fn, _PARAMS):
            setattr(fn, _PARAMS, [])
        getattr(fn, _PARAMS).append(param)
        return fn
    return decorate


def option(*decls: str, default: Any = None, multiple: bool = False, is_flag: bool = False,
           type: Converter | type | None = None, choices: Sequence[str] | None = None,
           envvar: str | None = None, metavar: str | None = None, help: str = "",
           show_default: bool = False) -> Callable[[F], F]:
    """Declare an option: ``-t/--tag NAME``; a name without dashes names the parameter (``"tags"``).

    ``multiple``: repeatable, a tuple; ``is_flag``: present or not; ``"--x/--no-x"``: a flag pair;
    ``envvar``: the default when the flag is absent and the variable is set and not empty.
    """
    return _declare(Option(decls, default=default, multiple=multiple, is_flag=is_flag, type=type, choices=choices,
                           envvar=envvar, metavar=metavar, help=help, show_default=show_default))


def version_option(text: str) -> Callable[[F], F]:
    """``--version``: print ``text`` and exit 0."""
    return _declare(Option(["--version"], version=text, help="Show the version and exit."))


def argument(name: str, *, required: bool = True, nargs: int = 1, type: Converter | type | None = None,
             default: Any = None) -> Callable[[F], F]:
    """Declare a positional argument, in order: ``nargs=-1`` takes all the remaining ones."""
    return _declare(Argument(name, required=required, nargs=nargs, type=type, default=default))


def pass_context(fn: F) -> F:
    """The command's function receives its :class:`Context` first."""
    setattr(fn, _PASS_CONTEXT, True)
    return fn


# -- commands

class Context:
    """One command's invocation: its parsed values, its parent's context and the shared ``obj``.

    ``obj`` is the root's (the group's callback sets it; subcommands see the same object), and
    callbacks registered with :meth:`call_on_close` run when the context ends, even on errors.
    """

    def __init__(self, command: Command, info_name: str, parent: Context | None = None) -> None:
        self.command = command
        self.info_name = info_name
        self.parent = parent
        self.obj: Any = parent.obj if parent is not None else None
        self.params: dict[str, Any] = {}
        self.args: list[str] = []  # a group's: the subcommand and its arguments
        self._on_close: list[Callable[[], Any]] = []

    @property
    def command_path(self) -> str:
        return f"{self.parent.command_path} {self.info_name}" if self.parent is not None else self.info_name

    def find_root(self) -> Context:
        ctx = self
        while ctx.parent is not None:
            ctx = ctx.parent
        return ctx

    def call_on_close(self, callback: Callable[[], Any]) -> Callable[[], Any]:
        self._on_close.append(callback)
        return callback

    def close(self) -> None:
        """Run the close callbacks, last registered first."""
        while self._on_close:
            self._on_close.pop()()

    def exit(self, code: int = 0) -> NoReturn:
        raise SystemExit(code)


class _Parser(argparse.ArgumentParser):
    """argparse with errors raised (not printed and exited), and help text made only when asked for.

    ``command`` gives the description (a docstring to dedent) and, for a group, the list of
    commands, which loads every command's module.
    """

    command: Command | None = None
    ctx: Context | None = None

    def error(self, message: str) -> NoReturn:
        if message.endswith(": expected one argument") and message.startswith("argument "):
            message = f"flag needs an argument: {message[len('argument '):-len(': expected one argument')]}"
        raise UsageError(message)

    def format_help(self) -> str:
        if self.command is None or self.ctx is None:
            return super().format_help()
        self.description = self.command.help
        return super().format_help() + self.command.help_epilog(self.ctx)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """``-t, --tag TEXT`` (as click and docker show it) rather than argparse's ``-t TEXT, --tag TEXT``.

    The terminal's width is asked once: argparse makes a formatter for every option it declares.
    """

    columns: int | None = None

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            if _Formatter.columns is None:
                _Formatter.columns = _terminal_columns() - 2  # argparse's margin
            width = _Formatter.columns
        super().__init__(prog, indent_increment, max_help_position, width)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return f"{', '.join(action.option_strings)} {action.metavar}"


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, without importing shutil (bz2 and lzma with it) on
    every command: argparse asks when it declares an option, not only when it prints help."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _doc(fn: Callable[..., Any]) -> str:
    """A docstring without its source indentation."""
    lines = (fn.__doc__ or "").strip().splitlines()
    if len(lines) < 2:
        return "\n".join(lines)
    import textwrap

    return lines[0] + "\n" + textwrap.dedent("\n".join(lines[1:]))


class Command:
    """A command: its options and arguments, and the function that runs with their values."""

    def __init__(self, name: str, callback: Callable[..., Any], *, interspersed: bool = True) -> None:
        self.name = name
        self.callback = callback
        self.interspersed = interspersed
        params = list(reversed(getattr(callback, _PARAMS, [])))  # decorators apply bottom-up
        self.options = [p for p in params if isinstance(p, Option)]
        self.arguments = [p for p in params if isinstance(p, Argument)]
        self.pass_context = bool(getattr(callback, _PASS_CONTEXT, False))

    @property
    def help(self) -> str:
        return _doc(self.callback)

    @property
    def short_help(self) -> str:
        """The docstring's first line, for a group's list of commands."""
        return self.help.split("\n", 1)[0]

    def usage_tail(self) -> str:
        return " ".join(["[OPTIONS]", *(a.metavar for a in self.arguments)])

    def help_epilog(self, ctx: Context) -> str:
        """What help shows after the options (a group: its commands)."""
        return ""

    def parser(self, ctx: Context) -> _Parser:
        parser = _Parser(prog=ctx.command_path, usage=f"{ctx.command_path} {self.usage_tail()}",
                         add_help=False, allow_abbrev=False, formatter_class=_Formatter)
        parser.command, parser.ctx = self, ctx
        parser.add_argument("-h", "--help", action="help", help="Show this message and exit.")
        for opt in self.options:
            opt.add_to(parser)
        return parser

    def get_help(self, ctx: Context) -> str:
        return self.parser(ctx).format_help()

    def split(self, args: Sequence[str]) -> tuple[list[str], list[str]]:
        """Separate option tokens from positional ones, as click's parser does.

        Value-taking options come out as ``--long=VALUE`` (argparse would take a value starting
        with ``-`` for a flag), clusters of short flags one by one; unknown flags are left for
        argparse to report. After ``--``, and after the first argument when the command is not
        interspersed, everything is positional, verbatim.
        """
        valued = {}
        for opt in self.options:
            if opt.takes_value:
                canonical = max(opt.on, key=len)
                valued.update({name: canonical for name in opt.on})
        options: list[str] = []
        positional: list[str] = []
        i = 0
        while i < len(args):
            token = args[i]
            i += 1
            if token == "--":
                positional.extend(args[i:])
                break
            if len(token) < 2 or not token.startswith("-"):
                positional.append(token)
                if not self.interspersed:
                    positional.extend(args[i:])
                    break
                continue
            if token in valued:
                if i < len(args):
                    options.append(f"{valued[token]}={args[i]}")
                    i += 1
                else:
                    options.append(token)  # argparse: "expected one argument"
                continue
            if token.startswith("--"):
                options.append(token)  # --flag, --opt=value, or an unknown flag
                continue
            for j in range(1, len(token)):  # -qt NAME, -tNAME
                short = f"-{token[j]}"
                if short not in valued:
                    options.append(short)
                    continue
                rest = token[j + 1:]
                if rest:
                    options.append(f"{valued[short]}={rest}")
                elif i < len(args):
                    options.append(f"{valued[short]}={args[i]}")
                    i += 1
                else:
                    options.append(short)
                break
        return options, positional

    def make_context(self, info_name: str, args: Sequence[str], parent: Context | None = None) -> Context:
        """Parse ``args`` into a new context's ``params`` (and a group's ``args``)."""
        ctx = Context(self, info_name, parent)
        try:
            self.parse(ctx, args)
        except UsageError as exc:
            exc.ctx = exc.ctx or ctx
            raise
        return ctx

    def parse(self, ctx: Context, args: Sequence[str]) -> None:
        tokens, positional = self.split(args)
        namespace, unknown = self.parser(ctx).parse_known_args(tokens)
        if unknown:
            raise UsageError(f"unknown flag: {unknown[0].split('=', 1)[0]}")
        for opt in self.options:
            if opt.version is None:
                ctx.params[opt.dest] = opt.value(getattr(namespace, opt.dest))
        ctx.args = self.take_arguments(ctx, positional)

    def take_arguments(self, ctx: Context, positional: list[str]) -> list[str]:
        """Assign the positional arguments in order; what is left over (a group's subcommand) is returned."""
        needed = sum(1 for a in self.arguments if a.required)
        most = None if any(a.variadic for a in self.arguments) else len(self.arguments)
        if len(positional) < needed or (most is not None and len(positional) > most):
            raise UsageError(_count_message(self.name, len(positional), needed, most))
        rest = list(positional)
        optional_left = len(rest) - needed
        for arg in self.arguments:
            if arg.variadic:
                ctx.params[arg.dest] = tuple(arg.value(v) for v in rest)
                rest = []
            elif arg.required or optional_left > 0:
                optional_left -= 0 if arg.required else 1
                ctx.params[arg.dest] = arg.value(rest.pop(0))
            else:
                ctx.params[arg.dest] = arg.default
        return rest

    def invoke(self, ctx: Context) -> Any:
        """Run the callback with the parsed values."""
        try:
            if self.pass_context:
                return self.callback(ctx, **ctx.params)
            return self.callback(**ctx.params)
        except UsageError as exc:
            exc.ctx = exc.ctx or ctx
            raise

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None) -> int:
        """Parse the command line, run, close the contexts; return the exit code.

        Usage errors print ``Error: …`` and ``See '… --help'.`` on stderr and return 2; a
        :class:`SystemExit` (``ctx.exit``, ``--help``) returns its code.
        """
        argv = list(sys.argv[1:] if args is None else args)
        name = prog_name or os.path.basename(sys.argv[0]) or self.name
        try:
            ctx = self.make_context(name, argv)
            try:
                self.invoke(ctx)
            finally:
                ctx.close()
        except UsageError as exc:
            echo(f"Error: {exc.message}", err=True)
            echo(f"See '{exc.ctx.command_path if exc.ctx else name} --help'.", err=True)
            return exc.exit_code
        except Abort:
            echo("Aborted!", err=True)
            return 1
        except SystemExit as exc:
            if isinstance(exc.code, str):
                echo(exc.code, err=True)
                return 1
            return exc.code or 0
        return 0


def _count_message(name: str, given: int, least: int, most: int | None) -> str:
    """docker's wording for a wrong number of arguments."""
    def n(count: int) -> str:
        return f"{count} argument{'s' if count != 1 else ''}"
    if most == least:
        return f'"{name}" requires exactly {n(least)}' if least else f'"{name}" accepts no arguments'
    if most is None:
        return f'"{name}" requires at least {n(least)}'
    if least == 0:
        return f'"{name}" accepts at most {n(most)}'
    return f'"{name}" requires at least {least} and at most {n(most)}'


class Group(Command):
    """A command whose first argument names a subcommand; everything after it is the subcommand's.

    Subclasses may find commands lazily by overriding :meth:`get_command` and :meth:`list_commands`.
    """

    def __init__(self, name: str, callback: Callable[..., Any]) -> None:
        super().__init__(name, callback, interspersed=False)
        self.commands: dict[str, Command] = {}

    def usage_tail(self) -> str:
        return "[OPTIONS] COMMAND [ARG...]"

    def add_command(self, command: Command) -> None:
        self.commands[command.name] = command

    def command(self, name: str | None = None, *, interspersed: bool = True) -> Callable[[Callable[..., Any]], Command]:
        """Declare a subcommand of this group."""
        def decorate(fn: Callable[..., Any]) -> Command:
            cmd = command(name, interspersed=interspersed)(fn)
            self.add_command(cmd)
            return cmd
        return decorate

    def get_command(self, name: str) -> Command | None:
        return self.commands.get(name)

    def list_commands(self) -> list[str]:
        return sorted(self.commands)

    def help_epilog(self, ctx: Context) -> str:
        rows = [(name, cmd.short_help) for name in self.list_commands() if (cmd := self.get_command(name))]
        width = max((len(name) for name, _ in rows), default=0)
        lines = "".join(f"  {name:<{width}}  {text}".rstrip() + "\n" for name, text in rows)
        return f"\ncommands:\n{lines}\nRun '{ctx.command_path} COMMAND --help' for more information on a command.\n"

    def take_arguments(self, ctx: Context, positional: list[str]) -> list[str]:
        return positional

    def invoke(self, ctx: Context) -> Any:
        """Run the group's callback, then the subcommand (help when there is none)."""
        super().invoke(ctx)
        if not ctx.args:
            echo(self.get_help(ctx), nl=False)
            return None
        name, rest = ctx.args[0], ctx.args[1:]
        cmd = self.get_command(name)
        if cmd is None:
            raise UsageError(self._unknown(name), ctx)
        sub = cmd.make_context(name, rest, parent=ctx)
        try:
            return cmd.invoke(sub)
        finally:
            sub.close()

    def _unknown(self, name: str) -> str:
        import difflib

        close = difflib.get_close_matches(name, self.list_commands())
        return f"no such command '{name}'." + (f" Did you mean '{close[0]}'?" if close else "")


def command(name: str | None = None, *, interspersed: bool = True) -> Callable[[Callable[..., Any]], Command]:
    """Turn a function into a command (named after it unless ``name`` says otherwise).

    ``interspersed=False``: arguments after the first positional one go to the command verbatim,
    even those that look like flags (``lamina run IMAGE ls -la``).
    """
    def decorate(fn: Callable[..., Any]) -> Command:
        return Command(name or fn.__name__.strip("_"), fn, interspersed=interspersed)
    return decorate


def group(name: str | None = None, *, cls: type[Group] = Group) -> Callable[[Callable[..., Any]], Group]:
    """Turn a function into a group of subcommands; the function runs before the subcommand."""
    def decorate(fn: Callable[..., Any]) -> Group:
        return cls(name or fn.__name__.strip("_"), fn)
    return decorate
