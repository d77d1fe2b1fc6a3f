"""``lamina run`` as a docker user types it: exit codes, -i stdin, -it on a terminal, -e/-w/-u."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli
from helpers.images import busybox_rootfs_tar

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


def lamina(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return cli.lamina(root, *args, check=False, stdin=stdin, timeout=120)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    tarball = root / "rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    proc = lamina(root / "store", "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]', str(tarball),
                  "busybox:test")
    assert proc.returncode == 0, proc.stderr
    return root / "store"


def test_the_exit_code_and_output_pass_through(store: Path) -> None:
    proc = lamina(store, "run", "--rm", "busybox:test", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == "out\n"
    assert "err" in proc.stderr


def test_dash_i_feeds_stdin_and_without_it_stdin_is_empty(store: Path) -> None:
    assert lamina(store, "run", "-i", "busybox:test", "wc", "-l", stdin="a\nb\nc\n").stdout.strip() == "3"
    assert lamina(store, "run", "busybox:test", "wc", "-l", stdin="a\nb\n").stdout.strip() == "0"


def test_env_workdir_user_and_entrypoint(store: Path) -> None:
    proc = lamina(store, "run", "-e", "GREETING=hi there", "-w", "/tmp", "-u", "1000:1000", "busybox:test",
                  "sh", "-c", 'echo "$GREETING|$(pwd)|$(id -u):$(id -g)"')
    assert proc.stdout == "hi there|/tmp|1000:1000\n", proc.stderr
    proc = lamina(store, "run", "--entrypoint", "echo", "busybox:test", "from", "entrypoint")
    assert proc.stdout == "from entrypoint\n"


def test_an_unknown_image_is_one_line(store: Path) -> None:
    proc = lamina(store, "run", "nosuch:image")
    assert proc.returncode != 0
    assert proc.stderr.startswith("Error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_dash_it_gives_the_shell_a_terminal(store: Path) -> None:
    """Like ``docker run -it IMAGE sh``: a terminal inside, typed lines echoed, the exit code out."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: lamina on the pty's slave side
        os.execvp(sys.executable, [sys.executable, "-m", "lamina", "--root", str(store), "run", "-it",
                                   "busybox:test", "sh"])
    out = b""
    sent = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if not sent:  # the shell is up and waiting: type into it
                os.write(fd, b"tty -s && echo TTY-$((6*7)); exit 5\n")
                sent = True
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert b"TTY-42" in out, out
    assert os.waitstatus_to_exitcode(status) == 5
