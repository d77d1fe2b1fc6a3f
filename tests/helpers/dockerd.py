"""A private dockerd for the tests that use real docker as an independent reader.

Its own data root, exec root and socket, no bridge and no iptables (as the
brief asks: ``dockerd --bridge=none --iptables=false``), stopped afterwards;
the test is skipped when docker is not installed, we are not root, or the
daemon does not come up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def private_dockerd(data: Path) -> Iterator[list[str]]:
    """The argv of a docker client talking to a dockerd of our own, with its state under ``data``."""
    client = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
    daemon = shutil.which("dockerd")
    if client is None or daemon is None or os.geteuid() != 0:
        pytest.skip("docker/dockerd not installed, or not root")
    exec_root = Path(tempfile.mkdtemp(prefix="ldk-"))  # short: containerd's socket path has a length limit
    sock = exec_root / "docker.sock"
    with open(data / "log", "wb") as log:
        proc = subprocess.Popen(
            [daemon, "--bridge=none", "--iptables=false", "--data-root", str(data / "root"),
             "--exec-root", str(exec_root / "exec"), "--pidfile", str(exec_root / "pid"), "-H", f"unix://{sock}"],
            stdout=log, stderr=log, start_new_session=True)
    argv = [client, "-H", f"unix://{sock}"]
    try:
        if not _wait_ready(argv, proc):
            pytest.skip("dockerd did not start: " + (data / "log").read_text()[-300:])
        yield argv
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(exec_root, ignore_errors=True)


def _wait_ready(argv: list[str], proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and proc.poll() is None:
        if subprocess.run([*argv, "info"], capture_output=True).returncode == 0:
            return True
        time.sleep(0.5)
    return False
