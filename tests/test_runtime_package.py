"""The public surface of lamina.runtime, pinned."""

from __future__ import annotations

import lamina.runtime
from lamina.runtime import Executor, RecordingExecutor, RuncExecutor


def test_public_names() -> None:
    assert sorted(lamina.runtime.__all__) == [
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
    for name in lamina.runtime.__all__:
        assert hasattr(lamina.runtime, name)


def _runc_is_an_executor(executor: RuncExecutor) -> Executor:
    return executor  # checked by mypy: RuncExecutor satisfies the protocol


def _fake_is_an_executor(executor: RecordingExecutor) -> Executor:
    return executor
