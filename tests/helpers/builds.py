"""Building a Dockerfile through the API in tests: the layers it made and the steps it took from the cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lamina.image.image import Layer
from lamina.store.store import Store

Build = Callable[[str], tuple[list[Layer], list[int]]]


def dockerfile_runner(store: Store, ctx: Path) -> Build:
    """``run(dockerfile)``: write it into ``ctx`` (made here), build it as ``t:latest``; (layers, cached step numbers)."""
    from lamina import api
    from lamina.build import events
    from lamina.build.options import BuildOptions

    ctx.mkdir(exist_ok=True)

    def run(dockerfile: str) -> tuple[list[Layer], list[int]]:
        (ctx / "Dockerfile").write_text(dockerfile)
        seen: list[events.Event] = []
        stored = api.build(store, BuildOptions(context=ctx, tags=("t:latest",)), listener=seen.append)
        return list(stored.image.layers), [e.number for e in seen if isinstance(e, events.StepCached)]
    return run
