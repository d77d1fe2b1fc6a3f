"""Parallel transfers: all items done, the first failure raised, the rest cancelled."""

from __future__ import annotations

import threading
import time

import pytest

from lamina.transport.registry.parallel import run_all


def test_runs_every_item_in_several_threads() -> None:
    names: set[str] = set()
    done: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        time.sleep(0.01)
        with lock:
            names.add(threading.current_thread().name)
            done.append(n)

    run_all(work, range(8), workers=4)
    assert sorted(done) == list(range(8)) and len(names) > 1


def test_first_error_is_raised_and_pending_items_cancelled() -> None:
    started: list[int] = []

    def work(n: int) -> None:
        started.append(n)
        if n == 0:
            raise OSError("disk full")
        time.sleep(0.05)

    with pytest.raises(OSError, match="disk full"):
        run_all(work, range(20), workers=2)
    assert len(started) < 20


def test_single_item_runs_inline() -> None:
    seen: list[str] = []
    run_all(lambda n: seen.append(threading.current_thread().name), [1])
    assert seen == [threading.current_thread().name]


def test_an_interrupted_caller_stops_handing_out_items(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    joins = 0
    real_join = threading.Thread.join

    def interrupted_join(self: threading.Thread, timeout: float | None = None) -> None:
        nonlocal joins
        joins += 1
        if joins == 1:
            raise KeyboardInterrupt  # Ctrl-C while the caller waits
        real_join(self, timeout)

    def work(n: int) -> None:
        started.append(n)
        time.sleep(0.02)

    monkeypatch.setattr(threading.Thread, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        run_all(work, range(50), workers=2)
    assert len(started) < 50  # the workers finished what they had and took nothing more
    assert not any(t.name.startswith("lamina-transfer") for t in threading.enumerate())


def test_push_does_not_load_the_pull_side_or_concurrent_futures() -> None:
    import subprocess
    import sys

    code = "import sys, lamina.transport.registry.push; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert "lamina.transport.registry.push" in loaded
    assert not {"lamina.transport.registry.pull", "lamina.image.layersize", "concurrent.futures"} & loaded
