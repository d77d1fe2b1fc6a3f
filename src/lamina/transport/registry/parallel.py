"""Running blob transfers side by side, failing fast."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

WORKERS = 4  # like docker's max-concurrent-downloads/uploads defaults (3 and 5)


def run_all(work: Callable[[T], None], items: Iterable[T], workers: int = WORKERS) -> None:
    """Call ``work`` on every item in up to ``workers`` threads; the first error is raised.

    Items not yet started when one fails are cancelled; running ones finish
    (a half-written blob is discarded by its writer, so stopping there is safe).
    """
    todo = list(items)
    if len(todo) <= 1 or workers <= 1:
        for item in todo:
            work(item)
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, len(todo)), thread_name_prefix="lamina-transfer")
    try:
        futures = [pool.submit(work, item) for item in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            error = future.exception() if future in done else None
            if error is not None:
                raise error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
