"""Progress events: serialized callbacks, nothing when there is no listener."""

from __future__ import annotations

import threading

from lamina.oci.digest import Digest
from lamina.transport.registry.events import BlobProgress, Emitter, Event

DIGEST = Digest("sha256", "a" * 64)


def test_emitter_builds_blob_events() -> None:
    seen: list[Event] = []
    Emitter(seen.append).blob(DIGEST, "layer", "transferring", 5, 10)
    assert seen == [BlobProgress(DIGEST, "layer", "transferring", 5, 10)]


def test_emitter_without_listener_is_silent() -> None:
    Emitter(None).blob(DIGEST, "config", "complete", 1, 1)


def test_callbacks_never_overlap() -> None:
    inside, overlaps = [0], [0]

    def listener(event: Event) -> None:
        inside[0] += 1
        if inside[0] > 1:
            overlaps[0] += 1
        inside[0] -= 1

    emit = Emitter(listener)

    def hammer() -> None:
        for i in range(2000):
            emit.blob(DIGEST, "layer", "transferring", i, 100)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [0]
