"""SIGKILL at random points of build (mid-RUN, mid-commit, mid-unpack), pull and push.

Each trial kills one lamina process at a time drawn (with a fixed seed) from
the operation's measured duration, then requires: ``system check`` reports
nothing, or only what ``--repair`` is for and is clean after it (every other
trial skips this, leaving the cleanup to the next process); a normal build
succeeds; then ``system check`` reports nothing; no mount under the store, no
runc container in its state dir, no process of the dead one left running. A sentinel tree beside the
store stays unchanged. ``LAMINA_FAULT_TRIALS`` sets the number of trials
(8 by default, spread over the operations).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.faults import (
    Sentinel,
    check_clean,
    containers,
    kill_after,
    lamina,
    make_sentinel,
    mounts_under,
    start,
    store_processes,
    wait_gone,
)
from helpers.images import import_busybox
from helpers.registry import RunningRegistry, running_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]

SEED = 8
TRIALS = int(os.environ.get("LAMINA_FAULT_TRIALS", "8"))
SHARES = {"build": 0.3, "unpack": 0.25, "pull": 0.25, "push": 0.2}  # of the trials, per operation

# mid-RUN (the sleep), then mid-commit (8 MiB of random bytes to hash and compress)
BUILD = """FROM busybox:test
ARG N
RUN echo $N > /n && sleep 1 && dd if=/dev/urandom of=/big bs=64k count=128 2>/dev/null
RUN cat /n > /again
"""
UNPACK = "FROM big:1\nARG N\nRUN echo $N > /n\n"


def _trials(operation: str) -> int:
    counts = {op: int(TRIALS * share) for op, share in SHARES.items()}
    for op in list(SHARES)[: TRIALS - sum(counts.values())]:
        counts[op] += 1
    return counts[operation]


def _big_rootfs() -> bytes:
    """A layer worth unpacking and transferring: 512 files of random bytes (16 MiB) beside busybox."""
    from helpers.images import busybox_rootfs_tar

    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_tar())) as base, \
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for member in base.getmembers():
            out.addfile(member, base.extractfile(member) if member.isfile() else None)
        rng = random.Random(SEED)
        for i in range(512):
            data = rng.randbytes(32 * 1024)
            info = tarfile.TarInfo(f"data/d{i // 32}/f{i}")
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Bench:
    """The store under test, its registry, and each operation's measured duration."""

    store: Path
    work: Path
    registry: RunningRegistry
    sentinel: Sentinel
    ctx: Path
    unpack_ctx: Path
    seconds: dict[str, float] = field(default_factory=dict)
    startup: float = 0.0  # how long lamina takes to start: kills before that only test the interpreter
    counter: int = 0
    outcomes: list[tuple[str, float, bool, int]] = field(default_factory=list)  # op, at, killed, repaired

    def fresh(self) -> str:
        self.counter += 1
        return str(self.counter)

    @property
    def remote(self) -> str:
        return f"{self.registry.host}/faults/big:1"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("kill")
    sentinel = make_sentinel(tmp / "sentinel")
    store, work = tmp / "store", tmp / "work"
    import_busybox(store, work)
    (work / "big.tar").write_bytes(_big_rootfs())
    lamina(store, "import", "-c", "ENV PATH=/bin", str(work / "big.tar"), "big:1")
    ctx, unpack_ctx = tmp / "ctx", tmp / "unpack-ctx"
    for path, text in ((ctx, BUILD), (unpack_ctx, UNPACK)):
        path.mkdir()
        (path / "Dockerfile").write_text(text)
    with running_registry(tmp / "registry") as reg:
        b = Bench(store, work, reg, sentinel, ctx, unpack_ctx)
        lamina(store, "tag", "big:1", b.remote)
        lamina(store, "push", b.remote)
        b.startup = min(_timed(lambda: lamina(store, "images", "-q")) for _ in range(3))
        for op in SHARES:  # each once to the end: it works, and how long it takes
            _prepare(b, op)
            started = time.monotonic()
            lamina(store, *_command(b, op))
            b.seconds[op] = time.monotonic() - started
            _after_pull(b)
        yield b
        killed = sum(1 for _op, _at, k, _r in b.outcomes if k)
        repaired = sum(1 for _op, _at, _k, r in b.outcomes if r)
        print(f"\nfault trials: {len(b.outcomes)}, killed mid-way: {killed}, needed --repair: {repaired}, "
              f"start-up: {b.startup:.2f}s, durations: { {op: round(s, 2) for op, s in b.seconds.items()} }")
    _assert_nothing_left(store)
    sentinel.assert_unchanged()


def _timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def _prepare(b: Bench, op: str) -> None:
    """Make the operation do its whole work again (unpack, download) rather than find it done."""
    if op == "unpack":
        layers = json.loads(lamina(b.store, "inspect", "-f", "{{json .RootFS.Layers}}", "big:1").stdout)
        for diff_id in layers:
            shutil.rmtree(b.store / "snapshots" / diff_id.removeprefix("sha256:"), ignore_errors=True)
    elif op == "pull":
        lamina(b.store, "rmi", "-f", b.remote, "big:1", check=False)
        lamina(b.store, "system", "prune", "-a", "-f")


def _command(b: Bench, op: str) -> list[str]:
    if op == "build":
        return ["build", "-q", "--build-arg", f"N={b.fresh()}", "-t", "built:1", str(b.ctx)]
    if op == "unpack":
        return ["build", "-q", "--build-arg", f"N={b.fresh()}", "-t", "unpacked:1", str(b.unpack_ctx)]
    if op == "pull":
        return ["pull", b.remote]
    return ["push", "big:1", f"{b.registry.host}/faults/pushed{b.fresh()}:1"]


def _after_pull(b: Bench) -> None:
    """Pull trials remove big:1; later trials want it back."""
    if lamina(b.store, "inspect", "big:1", check=False).returncode != 0:
        lamina(b.store, "pull", b.remote)
        lamina(b.store, "tag", b.remote, "big:1")


@pytest.mark.parametrize("op", list(SHARES))
def test_sigkill_then_check_and_build(bench: Bench, op: str) -> None:
    rng = random.Random(f"{SEED}-{op}")
    for trial in range(_trials(op)):
        _prepare(bench, op)
        at = rng.uniform(0.6 * bench.startup, bench.seconds[op])
        killed = kill_after(start(bench.store, *_command(bench, op)), at)
        # even trials: check (and repair) first; odd ones: the next lamina process must clean up alone
        report = check_clean(bench.store).splitlines() if trial % 2 == 0 else ["(not checked first)"]
        bench.outcomes.append((op, at, killed, len(report) - 1))
        if op == "pull":
            _after_pull(bench)
        # the next normal build: a step that runs, so it recovers what the dead process left
        lamina(bench.store, "build", "-q", "--build-arg", f"N={bench.fresh()}", "-t", "after:1", str(bench.ctx))
        strict = lamina(bench.store, "system", "check", check=False)
        assert strict.returncode == 0, f"after {op} killed at {at:.2f}s and a build:\n{strict.stdout}"
        _assert_nothing_left(bench.store, f"after {op} killed at {at:.2f}s ({report[-1]})")
    bench.sentinel.assert_unchanged()


def _assert_nothing_left(store: Path, where: str = "") -> None:
    assert not wait_gone(store_processes(store)), f"processes of a dead lamina still run {where}"
    assert not mounts_under(store), f"stale mounts {where}: {mounts_under(store)}"
    assert not containers(store), f"stale runc containers {where}: {containers(store)}"
    mounts = store / "mounts"
    left = [p.name for p in mounts.iterdir() if p.name.startswith("mnt-")] if mounts.is_dir() else []
    assert not left, f"stale mount work dirs {where}: {left}"
