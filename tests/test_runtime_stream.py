"""Unit tests for lamina.runtime.stream: holding back runc's failure line."""

from __future__ import annotations

import pytest

from lamina.runtime.stream import FailureLineFilter

FAILURE = b'runc run failed: unable to start container process: exec: "/bin/sh": stat /bin/sh: no such file\n'


def run(chunks: list[bytes], failed: bool) -> tuple[list[bytes], list[bytes]]:
    """Feed ``chunks``; return what was emitted before finish() and in total."""
    out: list[bytes] = []
    filt = FailureLineFilter(out.append)
    for chunk in chunks:
        filt.feed(chunk)
    before = list(out)
    filt.finish(failed)
    return before, out


def test_plain_output_passes_through_immediately() -> None:
    before, out = run([b"hello\n", b"partial", b" line\n"], failed=False)
    assert before == [b"hello\n", b"partial", b" line\n"]
    assert out == before


def test_failure_line_is_dropped_when_runtime_failed() -> None:
    before, out = run([FAILURE], failed=True)
    assert before == [] and out == []


def test_failure_line_split_across_chunks() -> None:
    before, out = run([FAILURE[:2], FAILURE[2:11], FAILURE[11:]], failed=True)
    assert out == []


def test_output_before_failure_line_is_kept() -> None:
    before, out = run([b"step 1\n" + FAILURE], failed=True)
    assert b"".join(out) == b"step 1\n"


def test_lookalike_line_is_released_when_runtime_succeeded() -> None:
    before, out = run([FAILURE], failed=False)
    assert before == []
    assert b"".join(out) == FAILURE


def test_lookalike_line_is_released_by_later_output() -> None:
    before, out = run([FAILURE, b"more\n"], failed=True)
    assert b"".join(before) == FAILURE + b"more\n"


@pytest.mark.parametrize("tail", [b"r", b"runc ", b"runc run failed"])
def test_possible_prefix_is_held_only_until_it_diverges(tail: bytes) -> None:
    out: list[bytes] = []
    filt = FailureLineFilter(out.append)
    filt.feed(b"out\n" + tail)
    assert out == [b"out\n"]
    filt.feed(b"!")
    assert b"".join(out) == b"out\n" + tail + b"!"


def test_prefix_not_at_line_start_is_not_held() -> None:
    before, _ = run([b"xrunc run failed: no\n"], failed=True)
    assert before == [b"xrunc run failed: no\n"]
