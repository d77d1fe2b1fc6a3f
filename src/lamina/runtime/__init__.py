"""Running processes in containers.

The builder sees only the :class:`Executor` protocol: give it a mounted root
filesystem and a :class:`ProcessSpec`, get output chunks and an exit status
back. :func:`make_spec` is the pure OCI runtime-spec generator;
:class:`RuncExecutor` drives runc (or crun) with it; :class:`RecordingExecutor`
is the test double.
"""

from __future__ import annotations

from lamina.runtime.executor import DEFAULT_HOSTNAME, Executor, Output, RecordingExecutor, RunCall
from lamina.runtime.runc import RuncExecutor, cleanup_stale
from lamina.runtime.spec import Mount, Network, ProcessSpec, make_spec

__all__ = [
    "DEFAULT_HOSTNAME",
    "Executor",
    "Mount",
    "Network",
    "Output",
    "ProcessSpec",
    "RecordingExecutor",
    "RunCall",
    "RuncExecutor",
    "cleanup_stale",
    "make_spec",
]
