"""Separating runc's own failure line from the container's output.

Without a terminal, runc hands its stdout and stderr to the container, so
when runc itself fails it prints ``runc run failed: …`` into the very pipe
that carries the container's output. :class:`FailureLineFilter` passes
output through as it arrives but holds back a trailing line that could be
that message, until later output or the end of the run shows whether it
was. The delay only affects a last line starting with ``runc run failed:``
(or a prefix of it cut mid-chunk).
"""

from __future__ import annotations

from collections.abc import Callable

MARKER = b"runc run failed: "


class FailureLineFilter:
    """Wraps an output callback; feed chunks in, then call :meth:`finish` once."""

    __slots__ = ("_emit", "_held")

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit
        self._held = b""

    def feed(self, chunk: bytes) -> None:
        data = self._held + chunk
        start = _last_line_start(data)
        line = data[start:]
        if line.startswith(MARKER) or MARKER.startswith(line):
            self._held = line
            data = data[:start]
        else:
            self._held = b""
        if data:
            self._emit(data)

    def finish(self, runtime_failed: bool) -> None:
        """Flush held output, dropping runc's failure line if ``runtime_failed``."""
        held, self._held = self._held, b""
        if held and not (runtime_failed and held.startswith(MARKER)):
            self._emit(held)


def _last_line_start(data: bytes) -> int:
    """Offset where the last line (complete or not) of ``data`` begins."""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    return data.rfind(b"\n", 0, end) + 1


__all__ = ["MARKER", "FailureLineFilter"]
