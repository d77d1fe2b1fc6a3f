"""Ctrl-C during a RUN, and a RUN with no shell: one line, exit code, and nothing left behind."""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import lamina
from helpers.faults import containers, delete_containers
from helpers.images import busybox_rootfs_tar

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]

SLEEP = str(random.randint(100_000, 999_999))  # a duration nothing else uses: finds the container's process


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    store = tmp_path / "store"
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    lamina(store, "import", "-c", "ENV PATH=/bin", str(tarball), "busybox:test")
    yield store
    _delete_containers(store)  # only finds something when a test failed


def _wait_for(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 60) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} in {seen!r}"
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"lamina ended early: {seen!r}"
            seen += chunk
    return seen


def _mounts_under(path: Path, pid: int | str = "self") -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as info:
        return [line.split()[4] for line in info if line.split()[4].startswith(str(path))]


def _delete_containers(store: Path) -> None:
    delete_containers(store)


def _sleepers() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", SLEEP.encode()]:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_ctrl_c_during_run_cleans_up_and_keeps_the_cache(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (tmp_path / "tok").write_text("s3cret-value\n")
    dockerfile = ("FROM busybox:test\nRUN echo one > /one\n"
                  "RUN --mount=type=cache,target=/c --mount=type=secret,id=tok --mount=type=bind,target=/ctx "
                  "echo started && sleep {}\nRUN echo after > /after\n")
    (ctx / "Dockerfile").write_text(dockerfile.format(SLEEP))
    proc = subprocess.Popen([sys.executable, "-m", "lamina", "--root", str(base), "build", "-t", "int",
                             "--secret", f"id=tok,src={tmp_path / 'tok'}", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # output to a pipe is block-buffered
    try:
        _wait_for(proc, b"started\n")
        during = _mounts_under(base, proc.pid)
        assert any("/mounts/" in m for m in during) and any("/secrets" in m for m in during)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert stderr.decode().strip() == "Interrupted"
    assert containers(base) == []
    assert _sleepers() == []
    assert _mounts_under(base) == []
    assert list((base / "tmp").iterdir()) == []
    assert list((base / "mounts").glob("mnt-*")) == []
    (ctx / "Dockerfile").write_text(dockerfile.format("0"))
    rebuilt = lamina(base, "build", "--secret", f"id=tok,src={tmp_path / 'tok'}", str(ctx)).stdout
    assert rebuilt.count("Using cache") == 1 and "Step 2/4 : RUN echo one > /one\n ---> Using cache" in rebuilt


def test_run_without_a_shell_is_a_one_line_error(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM busybox:test AS b\nFROM scratch\nCOPY --from=b /bin/busybox /busybox\n'
                                    'RUN ["/busybox", "echo", "exec form works"]\nRUN echo hi\n')
    failed = lamina(base, "build", str(ctx), check=False)
    assert failed.returncode == 1
    assert "exec form works" in failed.stdout
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Dockerfile:5: RUN echo hi: ")
    assert "/bin/sh" in lines[0] and "no such file or directory" in lines[0].lower()  # runc and crun word it apart
    assert containers(base) == []
    assert list((base / "tmp").iterdir()) == []
    assert list((base / "mounts").glob("mnt-*")) == []
