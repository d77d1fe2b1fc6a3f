"""Expand an instruction's words where, and only where, Docker expands them.

Expanded: ADD, COPY (sources, destination, ``--from``, ``--chown``,
``--chmod``, ``--exclude``, ADD's ``--checksum``, and heredoc bodies unless
the delimiter was quoted), ENV and LABEL (keys and values), ARG defaults, EXPOSE (which may
split one word into several ports), FROM (image and ``--platform``),
STOPSIGNAL, USER, VOLUME and WORKDIR. Not expanded: RUN, CMD, ENTRYPOINT,
SHELL and HEALTHCHECK (their shell sees the variables at run time; RUN
heredocs too), MAINTAINER and ONBUILD (a trigger is expanded when it runs in
the child).

Every word of one instruction sees the same ``env``, the state from before
the line, so ``ENV A=1 B=$A`` gives B the old A, as in Docker. The planner
passes the stage's ARG and ENV values (ENV winning), or the global ARGs for
FROM. BuildKit expands global ``ARG A=1 B=$A`` pair by pair, so the planner
should expand global ARG defaults one pair at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from lamina.errors import ExpansionError

from .instructions import (
    Add,
    Arg,
    Copy,
    Env,
    Expose,
    From,
    Instruction,
    Label,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from .parser import Heredoc
from .shell import Lexer

__all__ = ["expand", "expand_tracking"]

# BuildKit expands heredoc bodies with a fixed `\` escape and without quote
# processing, so quotes in an inline file survive while `$VAR` is replaced.
_BODY_LEXER = Lexer("\\", process_quotes=False)


def expand(
    instr: Instruction, env: Mapping[str, str], lexer: Lexer, *, file: str = "Dockerfile"
) -> Instruction:
    """``instr`` with its expandable words expanded against ``env``."""
    return expand_tracking(instr, env, lexer, file=file)[0]


def expand_tracking(
    instr: Instruction, env: Mapping[str, str], lexer: Lexer, *, file: str = "Dockerfile"
) -> tuple[Instruction, frozenset[str]]:
    """Like :func:`expand`, plus every variable name referenced (set or not), for cache keys.

    Raises :class:`~lamina.errors.ExpansionError` (located at the
    instruction's line) for ``${X:?msg}`` and malformed substitutions.
    """
    words = _Words(lexer, env, file, instr.line)
    match instr:
        case Copy() | Add():
            result: Instruction = _copy_like(instr, words)
        case Env():
            result = Env(pairs=words.pairs(instr.pairs), line=instr.line, original=instr.original)
        case Label():
            result = Label(pairs=words.pairs(instr.pairs), line=instr.line, original=instr.original)
        case Arg():
            pairs = tuple((k, None if v is None else words.one(v)) for k, v in instr.pairs)
            result = dataclasses.replace(instr, pairs=pairs)
        case Expose():
            ports = tuple(p for port in instr.ports for p in words.fields(port))
            result = dataclasses.replace(instr, ports=ports)
        case From():
            result = dataclasses.replace(
                instr, image=words.one(instr.image), platform=words.optional(instr.platform)
            )
        case StopSignal():
            result = dataclasses.replace(instr, signal=words.one(instr.signal))
        case User():
            result = dataclasses.replace(instr, user=words.one(instr.user))
        case Volume():
            result = dataclasses.replace(instr, paths=tuple(words.one(p) for p in instr.paths))
        case Workdir():
            result = dataclasses.replace(instr, path=words.one(instr.path))
        case _:
            result = instr
    return result, frozenset(words.names)


def _copy_like(instr: Copy | Add, words: _Words) -> Copy | Add:
    if isinstance(instr, Add) and instr.checksum is not None:  # BuildKit expands ADD --checksum too
        instr = dataclasses.replace(instr, checksum=words.one(instr.checksum))
    return dataclasses.replace(
        instr,
        sources=tuple(words.one(s) for s in instr.sources),
        dest=words.one(instr.dest),
        from_=words.optional(instr.from_),
        chown=words.optional(instr.chown),
        chmod=words.optional(instr.chmod),
        excludes=tuple(words.one(e) for e in instr.excludes),
        heredocs=tuple(words.body(h) for h in instr.heredocs),
    )


class _Words:
    """Expands words against one env, collecting the names they use."""

    def __init__(self, lexer: Lexer, env: Mapping[str, str], file: str, line: int) -> None:
        self.lexer = lexer
        self.env = env
        self.file = file
        self.line = line
        self.names: set[str] = set()

    def _run(self, lexer: Lexer, word: str) -> tuple[str, tuple[str, ...]]:
        try:
            result = lexer.process(word, self.env)
        except ExpansionError as exc:
            raise exc.located(self.file, self.line) from None
        self.names |= result.names
        return result.text, result.fields

    def one(self, word: str) -> str:
        return self._run(self.lexer, word)[0]

    def optional(self, word: str | None) -> str | None:
        return None if word is None else self.one(word)

    def fields(self, word: str) -> tuple[str, ...]:
        return self._run(self.lexer, word)[1]

    def pairs(self, pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return tuple((self.one(k), self.one(v)) for k, v in pairs)

    def body(self, doc: Heredoc) -> Heredoc:
        if not doc.expand:
            return doc
        return dataclasses.replace(doc, content=self._run(_BODY_LEXER, doc.content)[0])
