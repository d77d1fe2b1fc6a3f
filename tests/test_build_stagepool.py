"""The stage pool's event order: interleaved stages shown one stage's block at a time.

Running stages at once (and cancelling on the first failure) is exercised through real
multi-stage builds in test_build_builder.py and test_build_interrupt.py.
"""

from __future__ import annotations

from lamina.build import events
from lamina.build.stagepool import StageOrder


def _started(stage: str, number: int) -> events.StepStarted:
    return events.StepStarted(stage, number, 9, f"RUN {number}")


def test_a_second_stage_waits_until_the_first_finishes() -> None:
    seen: list[events.Event] = []
    order = StageOrder(seen.append)
    order(_started("a", 1))
    order(_started("b", 3))  # b runs at the same time: held back
    order(events.StepOutput("a", 1, b"x"))
    assert seen == [_started("a", 1), events.StepOutput("a", 1, b"x")]
    order.finished("a")
    assert seen[-1] == _started("b", 3)  # b's block follows, and b now streams live
    order(events.StepOutput("b", 3, b"y"))
    assert seen[-1] == events.StepOutput("b", 3, b"y")


def test_events_of_no_stage_pass_at_once_and_flush_empties_the_queue() -> None:
    seen: list[events.Event] = []
    order = StageOrder(seen.append)
    order(_started("a", 1))
    order(_started("b", 3))
    order(_started("c", 5))
    order(events.Warning_("w"))
    assert seen == [_started("a", 1), events.Warning_("w")]
    order.flush()  # the build ends (or fails): everything queued, in order of first event
    assert seen[2:] == [_started("b", 3), _started("c", 5)]
