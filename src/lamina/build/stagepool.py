"""Stages at once: every ready stage on its own thread, their events shown one stage at a time.

A stage mostly waits on its container (its own processes), so as BuildKit does
the builder runs every stage whose inputs are ready rather than one per core;
:class:`StageOrder` keeps the output readable by delivering one stage's block
of events at a time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lamina.build import events, schedule
from lamina.errors import BuildError

if TYPE_CHECKING:
    from lamina.build.builder import BuildRun

# the cap bounds threads and mounts
WORKERS = max(4, os.cpu_count() or 1)


class Cancelled(BuildError):
    """A stage stopped because another one failed; the other's error is the one reported."""


def run_pool(run: BuildRun, graph: schedule.Graph) -> None:
    """Run ``graph``'s stages on :data:`WORKERS` threads; the first failure cancels the rest.

    A cancelled stage stops at its next step (or at the next output of a RUN,
    whose container the executor then kills); the pool is drained before the
    first real error is raised, so no mount or container outlives the build.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    done: set[int] = set()
    running: dict[Future[Any], int] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="lamina-stage") as pool:
        try:
            while True:
                if failure is None:
                    for index in schedule.ready(graph, done, running.values()):
                        running[pool.submit(run.stage_result, index)] = index
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    exc = future.exception()
                    if exc is None:
                        done.add(index)
                    elif failure is None or isinstance(failure, Cancelled):
                        failure = exc
                        run.cancelled.set()
        except BaseException:  # Ctrl-C while waiting: stop the stages, then let it through
            run.cancelled.set()
            raise
    if failure is not None:
        raise failure


class StageOrder:
    """Interleaved stages' events, delivered one stage's block at a time (the classic look).

    The stage that holds the output streams live; the others' events wait in
    order of their first event and are delivered when it finishes. Callers
    hold the build's lock.
    """

    def __init__(self, listener: events.Listener) -> None:
        self._listener = listener
        self._current: str | None = None
        self._queued: dict[str, list[events.Event]] = {}
        self._finished: set[str] = set()

    def __call__(self, event: events.Event) -> None:
        stage = getattr(event, "stage", None)
        if stage is None or self._current in (None, stage):
            self._current = stage if stage is not None else self._current
            self._listener(event)
        else:
            self._queued.setdefault(stage, []).append(event)

    def finished(self, stage: str) -> None:
        self._finished.add(stage)
        if self._current == stage:
            self._current = None
            self._advance()

    def flush(self) -> None:
        self._finished.update(self._queued)
        self._current = None
        self._advance()

    def _advance(self) -> None:
        while self._queued:
            stage = next(iter(self._queued))
            for event in self._queued.pop(stage):
                self._listener(event)
            if stage not in self._finished:
                self._current = stage
                return


__all__ = ["WORKERS", "Cancelled", "StageOrder", "run_pool"]
