"""Leases: live ones are seen and exclude garbage collection; dead ones and their leftovers are cleaned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lamina.store.lease import Lease, exclusive, leftovers, live_leases

SRC = str(Path(__file__).parents[1] / "src")


def _holder(root: Path, operation: str = "pull") -> subprocess.Popen[str]:
    """Another process holding a lease until it is killed."""
    code = ("import time\nfrom lamina.store.lease import Lease\n"
            f"with Lease({str(root)!r}, {operation!r}):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": SRC})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_lease_is_a_locked_file_that_goes_away(tmp_path: Path) -> None:
    with Lease(tmp_path, "build") as lease:
        assert lease.name is not None
        path = tmp_path / "leases" / lease.name
        doc = json.loads(path.read_text())
        assert doc["pid"] == os.getpid() and doc["operation"] == "build"
        assert abs(doc["started"] - time.time()) < 5
        assert [info.operation for info in live_leases(tmp_path)] == ["build"]
        assert live_leases(tmp_path, exclude=lease.name) == ()
        with exclusive(tmp_path) as alone:
            assert not alone
    assert not path.exists() and live_leases(tmp_path) == ()
    with exclusive(tmp_path) as alone:
        assert alone


def test_leases_nest_within_a_process(tmp_path: Path) -> None:
    with Lease(tmp_path, "build") as outer, Lease(tmp_path, "pull") as inner:
        assert inner.name == outer.name
        assert len(live_leases(tmp_path)) == 1
    assert live_leases(tmp_path) == ()


def test_another_process_lease_blocks_exclusive_until_it_dies(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        (info,) = live_leases(tmp_path)
        assert (info.pid, info.operation) == (proc.pid, "pull")
        assert "pull (pid" in info.describe()
        with exclusive(tmp_path) as alone:
            assert not alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert live_leases(tmp_path) == ()  # the kernel dropped its locks; its file is a leftover now
    assert [p.name for p in leftovers(tmp_path)] == [info.name]
    with exclusive(tmp_path) as alone:
        assert alone


def test_first_lease_cleans_dead_processes_leftovers(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    snapshots = tmp_path / "snapshots"
    tmp.mkdir()
    snapshots.mkdir()
    (tmp_path / "leases").mkdir()
    dead = (tmp / "blob-999999-aa", snapshots / ".tmp-0123456789ab-xyz", tmp_path / "leases" / "999999-ab.lease")
    dead[0].write_text("x")  # a temp blob of a dead pid
    dead[1].mkdir()  # an interrupted unpack
    dead[2].write_text("{}")  # a killed process's lease
    (tmp / "lamina-abc-def").mkdir()  # a runc bundle: no pid in its name
    alive = tmp / f"blob-{os.getpid()}-bb"  # a process writing without a lease: spared
    alive.write_text("x")
    complete = snapshots / ("a" * 64)
    complete.mkdir()
    assert sorted(p.name for p in leftovers(tmp_path)) == sorted(
        [p.name for p in dead] + ["lamina-abc-def"])
    with Lease(tmp_path, "check", clean=False):
        assert all(p.exists() for p in dead)
    with Lease(tmp_path, "build"):
        assert not any(p.exists() for p in dead) and not (tmp / "lamina-abc-def").exists()
        assert alive.exists() and complete.is_dir()


def test_old_entries_are_leftovers_even_with_a_live_pid(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    old = tmp_path / "tmp" / f"blob-{os.getpid()}-cc"
    old.write_text("x")
    assert leftovers(tmp_path) == []
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert leftovers(tmp_path) == [old]


def test_no_cleaning_while_another_process_holds_a_lease(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        (tmp_path / "tmp").mkdir(exist_ok=True)
        stray = tmp_path / "tmp" / "blob-999999-dd"
        stray.write_text("x")
        with Lease(tmp_path, "build"):
            assert stray.exists()  # the other process might own it
    finally:
        proc.kill()
        proc.wait()
