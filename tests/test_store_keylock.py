from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from lamina.store.keylock import KeyLocks


def test_threads_take_turns(tmp_path: Path) -> None:
    locks = KeyLocks(tmp_path / "locks")
    inside: list[int] = []
    overlaps: list[bool] = []

    def work(n: int) -> None:
        with locks.hold("sha256:abc"):
            overlaps.append(bool(inside))
            inside.append(n)
            time.sleep(0.02)
            inside.remove(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [False] * 4


def test_different_keys_do_not_block(tmp_path: Path) -> None:
    locks = KeyLocks(tmp_path)
    with locks.hold("a"), locks.hold("b"):
        pass


def _hold_then_write(directory: str, out: str) -> None:
    with KeyLocks(Path(directory)).hold("k"):
        time.sleep(0.3)
        Path(out).write_text("child done")


def test_processes_exclude_each_other(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = multiprocessing.get_context("fork").Process(target=_hold_then_write, args=(str(tmp_path), str(out)))
    child.start()
    deadline = time.monotonic() + 5
    while not list(tmp_path.glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    with KeyLocks(tmp_path).hold("k"):
        assert out.read_text() == "child done"
    child.join()


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    child = multiprocessing.get_context("fork").Process(target=_hold_then_write,
                                                          args=(str(tmp_path), str(tmp_path / "never")))
    child.start()
    time.sleep(0.1)
    child.kill()
    child.join()
    with KeyLocks(tmp_path).hold("k"):
        pass


def test_key_names_are_made_safe(tmp_path: Path) -> None:
    locks = KeyLocks(tmp_path)
    with locks.hold("../../etc/passwd"):
        pass
    assert [p.parent for p in tmp_path.iterdir()] == [tmp_path]
