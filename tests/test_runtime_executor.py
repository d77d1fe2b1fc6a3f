"""Unit tests for lamina.runtime.executor: the protocol's test double."""

from __future__ import annotations

import io
from pathlib import Path

from lamina.runtime.executor import Executor, RecordingExecutor
from lamina.runtime.spec import Mount, ProcessSpec


def test_recording_executor_records_and_replies() -> None:
    fake = RecordingExecutor(exit_code=3, output_bytes=b"hi\n")
    executor: Executor = fake
    seen: list[bytes] = []
    process = ProcessSpec(("/bin/true",), (), "/", 0, 0)
    mount = Mount.bind("/a", "/b")
    code = executor.run(
        Path("/r"), process, network="none", mounts=(mount,), stdin=io.BytesIO(b"in"), output=seen.append
    )
    assert code == 3
    assert seen == [b"hi\n"]
    (call,) = fake.calls
    assert (call.rootfs, call.process, call.network, call.mounts, call.stdin) == (
        Path("/r"),
        process,
        "none",
        (mount,),
        b"in",
    )
    assert call.hostname == "lamina"
