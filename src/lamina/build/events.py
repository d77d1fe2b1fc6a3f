"""Build progress as data. The builder emits these; only the CLI renders them."""

from __future__ import annotations

from collections.abc import Callable

from lamina.model import model


@model
class StepStarted:
    stage: str
    number: int
    total: int
    text: str


@model
class StepCached:
    stage: str
    number: int


@model
class StepOutput:
    stage: str
    number: int
    data: bytes


@model
class StepDone:
    stage: str
    number: int
    image_id: str  # "" past the first 200 history entries for a step that adds no layer (see stagerun)
    seconds: float
    cached: bool


@model
class Warning_:
    message: str


@model
class BuildDone:
    image_id: str
    tags: tuple[str, ...]
    cached_steps: int
    total_steps: int
    seconds: float


@model
class CacheMiss:
    """A step that had to run, and why (:mod:`lamina.build.explain`), most useful reason first."""

    stage: str
    number: int
    total: int
    text: str
    reasons: tuple[str, ...]


Event = StepStarted | StepCached | StepOutput | StepDone | Warning_ | BuildDone | CacheMiss
Listener = Callable[[Event], None]


def ignore(_: Event) -> None:
    """A listener that drops every event (the Python API's default)."""
