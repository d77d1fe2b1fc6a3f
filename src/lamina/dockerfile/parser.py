"""Dockerfile text to AST nodes, through BuildKit's own parser.

The ``dockerfile`` package wraps BuildKit's Go parser, so continuations,
comments, JSON forms and heredoc bodies are cut exactly as Docker cuts them.
This module adds what the package leaves out or gets wrong, each noted where
it is handled:

- parser directives are not reported, and its BuildKit predates ``# check=``
  (it stops looking for directives there); we read the directives ourselves
  and hand the package only the escape directive;
- errors carry no line; we find it by re-parsing prefixes of the file;
- a NUL byte silently truncates the instruction, and a lone surrogate in a
  ``str`` crashes the process in the Go runtime; both are rejected first;
- unknown instructions come back as ordinary commands;
- a heredoc's ``<<-`` (tab stripping) and quoting (no expansion) are lost;
  we recover both from the raw ``<<WORD`` in the arguments;
- an ONBUILD trigger loses its flags and heredoc bodies; we parse the
  trigger's own lines again as an instruction of their own.
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any, Protocol

from lamina.errors import DockerfileError
from lamina.model import model

__all__ = ["KEYWORDS", "Directives", "Heredoc", "Node", "ParsedFile", "parse"]

KEYWORDS = frozenset(
    ("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK")
    + ("LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
)

# The PyPI package is loaded by name at run time: `lamina` is a namespace
# package, so static tools would take `dockerfile` for this very folder.
_buildkit: Any = importlib.import_module("dockerfile")


if TYPE_CHECKING:  # the package ships no types; these describe what it yields

    class _PackageHeredoc(Protocol):
        name: str
        file_descriptor: int
        content: str

    class _Command(Protocol):
        """What ``_buildkit.parse_string`` yields for each instruction."""

        cmd: str
        sub_cmd: str | None
        json: bool
        original: str
        start_line: int
        end_line: int
        flags: tuple[str, ...]
        value: tuple[str, ...]
        heredocs: tuple[_PackageHeredoc, ...]


@model
class Heredoc:
    """An inline file (``<<NAME``); ``content`` is already tab-stripped when ``chomp``.

    ``expand`` is False when any part of the delimiter was quoted
    (``<<"EOF"``, ``<<'EOF'``): Docker then leaves the body unexpanded.
    """

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int = 0


@model
class Directives:
    """The parser directives from the top of the file."""

    escape: str = "\\"
    syntax: str | None = None
    check: str | None = None


@model
class Node:
    """One instruction as BuildKit's parser cuts it; words are unexpanded.

    ``args`` are the raw words (the decoded strings for JSON form; the whole
    command line as one word for shell-form RUN/CMD/ENTRYPOINT), ``flags``
    the raw ``--name=value`` words, ``sub`` the trigger of an ONBUILD.
    """

    keyword: str
    args: tuple[str, ...]
    flags: tuple[str, ...] = ()
    json: bool = False
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    heredocs: tuple[Heredoc, ...] = ()
    sub: Node | None = None


@model
class ParsedFile:
    """A parsed Dockerfile: its directives and its instructions in order."""

    directives: Directives
    nodes: tuple[Node, ...]
    file: str = "Dockerfile"


def parse(text: str | bytes, file: str = "Dockerfile") -> ParsedFile:
    """Parse Dockerfile text; raise :class:`DockerfileError` (with line) on any problem."""
    text = _clean_text(text, file)
    lines = text.split("\n")
    directives, count = _read_directives(lines, file)
    # Blank the directive lines (keeping line numbers) and give the package
    # only the escape, so it never trips over a directive it does not know.
    lines[:count] = [""] * count
    if count and directives.escape != "\\":
        lines[0] = f"# escape={directives.escape}"
    commands = _run_package("\n".join(lines), file, directives.escape)
    nodes = tuple(_node(cmd, lines, directives.escape, file, top_level=True) for cmd in commands)
    return ParsedFile(directives, nodes, file)


def _clean_text(text: str | bytes, file: str) -> str:
    if isinstance(text, bytes):
        data = text
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise DockerfileError(
                f"the Dockerfile is not valid UTF-8 (byte 0x{data[exc.start]:02x})", file=file, line=line
            ) from None
    text = text.removeprefix("\ufeff")
    for bad, what in (("\x00", "a NUL byte"), ("[\ud800-\udfff]", "an unpaired surrogate")):
        found = re.search(bad, text)
        if found:
            line = text.count("\n", 0, found.start()) + 1
            raise DockerfileError(f"the Dockerfile contains {what}", file=file, line=line)
    return text


_DIRECTIVE = re.compile(r"#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*")


def _read_directives(lines: list[str], file: str) -> tuple[Directives, int]:
    """Directives as BuildKit reads them: leading ``# key=value`` lines only.

    The first line that is not a known directive (a blank line, an ordinary
    comment, an instruction) ends the search.
    """
    found: dict[str, str] = {}
    count = 0
    for number, raw in enumerate(lines, start=1):
        match = _DIRECTIVE.fullmatch(raw.removesuffix("\r").lstrip())
        key = match.group(1).lower() if match else ""
        if match is None or key not in ("escape", "syntax", "check"):
            break
        if key in found:
            raise DockerfileError(f"only one {key} parser directive can be used", file=file, line=number)
        found[key] = match.group(2)
        count = number
    escape = found.get("escape", "\\")
    if escape not in ("\\", "`"):
        line = next(n for n, raw in enumerate(lines[:count], 1) if "escape" in raw.lower())
        raise DockerfileError(f"invalid escape token '{escape}' does not match ` or \\", file=file, line=line)
    return Directives(escape, found.get("syntax"), found.get("check")), count


def _run_package(text: str, file: str, escape: str, *, line_offset: int = 0) -> list[_Command]:
    try:
        return list(_buildkit.parse_string(text))
    except _buildkit.GoParseError as exc:
        message = str(exc)
        if message == "file with no instructions":
            raise DockerfileError("the Dockerfile cannot be empty", file=file) from None
        line = _error_line(text, message, escape)
        raise DockerfileError(message, file=file, line=line and line + line_offset) from None
    except UnicodeDecodeError:
        # the package's C bridge can split a multi-byte character it slices (seen with HEALTHCHECK)
        line = _first_undecodable_line(text)
        raise DockerfileError("cannot parse this instruction's non-ASCII text", file=file,
                              line=line and line + line_offset) from None


def _first_undecodable_line(text: str, limit: int = 2000) -> int | None:
    lines = text.split("\n")
    for count in range(1, min(len(lines), limit) + 1):
        try:
            _buildkit.parse_string("\n".join(lines[:count]))
        except UnicodeDecodeError:
            return count
        except _buildkit.GoParseError:
            continue
    return None


def _error_line(text: str, message: str, escape: str, limit: int = 2000) -> int | None:
    """The line BuildKit would name: where the error starts and never stops.

    The package reports no position, so we shorten the file from the end
    while the shorter file still fails the same way. (Scanning from the start
    would be wrong for an unterminated heredoc: cutting an earlier, valid
    heredoc short gives the same message.) Then we step back over
    continuation lines to the instruction's first line.
    """
    ends = [m.end() for m in re.finditer("\n", text)] + [len(text)]
    line = len(ends)
    for _ in range(limit):
        if line <= 1:
            return 1
        try:
            _buildkit.parse_string(text[: ends[line - 2]])
        except _buildkit.GoParseError as exc:
            if str(exc) == message:
                line -= 1
                continue
        lines = text.split("\n")
        while line > 1 and lines[line - 2].rstrip().endswith(escape):
            line -= 1
        return line
    return None


def _node(cmd: _Command, lines: list[str], escape: str, file: str, *, top_level: bool) -> Node:
    keyword = cmd.cmd.upper()
    if top_level and keyword not in KEYWORDS:
        raise DockerfileError(f"unknown instruction: {keyword}", file=file, line=cmd.start_line)
    sub = None
    args = tuple(cmd.value)
    if keyword == "ONBUILD":
        # As in BuildKit's AST, an ONBUILD's words are its trigger's keyword and words.
        sub = _trigger(cmd, lines, escape, file) if cmd.sub_cmd is not None else None
        args = (sub.keyword, *sub.args) if sub else ()
    return Node(
        keyword=keyword,
        args=args,
        flags=tuple(cmd.flags),
        json=cmd.json,
        original=cmd.original,
        start_line=cmd.start_line,
        end_line=cmd.end_line,
        heredocs=_heredocs(cmd),
        sub=sub,
    )


_ONBUILD = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


def _trigger(cmd: _Command, lines: list[str], escape: str, file: str) -> Node | None:
    """Parse an ONBUILD's trigger from its own source lines.

    The package drops the trigger's flags and heredoc bodies, so we cut the
    ONBUILD keyword off the first line and parse the lines again. The trigger
    keeps the ONBUILD's line range; an unknown trigger is left for the child
    build to reject, as Docker does.
    """
    block = lines[cmd.start_line - 1 : cmd.end_line]
    block[0] = _ONBUILD.sub("", block[0], count=1)
    prefix = "" if escape == "\\" else f"# escape={escape}\n"
    offset = cmd.start_line - 1 - prefix.count("\n")
    commands = _run_package(prefix + "\n".join(block), file, escape, line_offset=offset)
    if not commands:
        return None
    node = _node(commands[0], [*prefix.splitlines(), *block], escape, file, top_level=False)
    return _relocate(node, cmd.start_line, cmd.end_line)


def _relocate(node: Node, start: int, end: int) -> Node:
    sub = _relocate(node.sub, start, end) if node.sub else None
    return Node(node.keyword, node.args, node.flags, node.json, node.original, start, end, node.heredocs, sub)


_HEREDOC_WORD = re.compile(r"(\d*)<<(-?)([^<]*)")


def _heredocs(cmd: _Command) -> tuple[Heredoc, ...]:
    """Pair the package's heredocs with the ``<<WORD`` words that opened them.

    The package gives name, fd and body; chomp (``<<-``) and quoting are
    read from the raw word, the way BuildKit itself reads them.
    """
    if not cmd.heredocs:
        return ()
    words = [w for arg in cmd.value for w in _raw_words(arg)]
    openers = [m for w in words if (m := _HEREDOC_WORD.fullmatch(w)) and m.group(3)]
    result = []
    for index, doc in enumerate(cmd.heredocs):
        opener = openers[index] if index < len(openers) else None
        chomp = bool(opener and opener.group(2))
        expand = not (opener and _is_quoted(opener.group(3)))
        content = re.sub(r"(?m)^\t+", "", doc.content) if chomp else doc.content
        result.append(Heredoc(doc.name, content, expand, chomp, doc.file_descriptor))
    return tuple(result)


def _raw_words(line: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes in the words."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    chars = iter(line)
    for ch in chars:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "\\":
            current.append(ch)
            ch = next(chars, "")
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        words.append("".join(current))
    return words


def _is_quoted(word: str) -> bool:
    """Whether a heredoc delimiter has a quoted part (an escaped quote does not count)."""
    escaped = False
    for ch in word:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "'\"":
            return True
    return False
