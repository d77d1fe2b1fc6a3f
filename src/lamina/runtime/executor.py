"""The seam between the builder and whatever runs a process in a container.

The builder mounts a root filesystem and hands it to an :class:`Executor`
with a :class:`~lamina.runtime.spec.ProcessSpec`; the executor runs the
process there, isolated, streams its output and returns its exit status.
:class:`RecordingExecutor` is the test double: it runs nothing and records
what it was asked to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import BinaryIO, Protocol

from lamina.model import model
from lamina.runtime.spec import Mount, ProcessSpec

DEFAULT_HOSTNAME = "lamina"

Output = Callable[[bytes], None]


class Executor(Protocol):
    """Runs one process in a container over ``rootfs`` and waits for it."""

    def run(
        self,
        rootfs: Path,
        process: ProcessSpec,
        *,
        network: str = "host",
        mounts: tuple[Mount, ...] = (),
        stdin: BinaryIO | None = None,
        output: Output | None = None,
        hostname: str = DEFAULT_HOSTNAME,
        errors: Output | None = None,
    ) -> int:
        """Return the exit status (``128+N`` when killed by signal ``N``).

        ``output`` is called in the caller's thread with chunks of merged
        stdout and stderr as they arrive (order is kept within each stream,
        not necessarily across them); ``None`` discards them. With
        ``errors`` (``lamina run``), stderr is kept apart and goes there. ``stdin``
        is read to its end (never closed); ``None`` means ``/dev/null``.
        A failure to start the process (runtime error, missing executable)
        raises :class:`~lamina.errors.RuntimeError_`, it is not an exit status.
        """
        ...


@model
class RunCall:
    """One recorded :meth:`Executor.run` call."""

    rootfs: Path
    process: ProcessSpec
    network: str
    mounts: tuple[Mount, ...]
    hostname: str
    stdin: bytes | None


@model(frozen=False)
class RecordingExecutor:
    """A fake executor: records calls, emits ``output_bytes``, returns ``exit_code``."""

    exit_code: int = 0
    output_bytes: bytes = b""
    calls: list[RunCall] = field(default_factory=list)

    def run(
        self,
        rootfs: Path,
        process: ProcessSpec,
        *,
        network: str = "host",
        mounts: tuple[Mount, ...] = (),
        stdin: BinaryIO | None = None,
        output: Output | None = None,
        hostname: str = DEFAULT_HOSTNAME,
        errors: Output | None = None,
    ) -> int:
        data = stdin.read() if stdin is not None else None
        self.calls.append(RunCall(rootfs, process, network, mounts, hostname, data))
        if output is not None and self.output_bytes:
            output(self.output_bytes)
        return self.exit_code


__all__ = ["DEFAULT_HOSTNAME", "Executor", "Output", "RecordingExecutor", "RunCall"]
