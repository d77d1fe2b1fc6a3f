"""Run a lamina command in this process and capture what it prints (for tests that need no subprocess)."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from lamina.cli.args import Command


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    output: str  # stdout and stderr as they interleaved


class _Tee(io.StringIO):
    """One stream's text, also written to the shared ``output``."""

    def __init__(self, shared: io.StringIO) -> None:
        super().__init__()
        self._shared = shared

    def write(self, text: str) -> int:
        self._shared.write(text)
        return super().write(text)


def invoke(command: Command, args: Sequence[str], *, stdin: str = "") -> Result:
    """``command.main(args)`` with stdin, stdout and stderr swapped for strings."""
    shared = io.StringIO()
    out, err = _Tee(shared), _Tee(shared)
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = command.main(list(args), prog_name="lamina")
    finally:
        sys.stdin = saved_stdin
    return Result(code, out.getvalue(), err.getvalue(), shared.getvalue())
