"""The libc calls os lacks: real mounts in a private namespace, errors as OSError with errno and path."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamina import syscalls

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

_MOUNT_IN_OWN_NAMESPACE = """
import os, sys
from pathlib import Path
from lamina import syscalls
target = Path(sys.argv[1])
syscalls.unshare(syscalls.CLONE_NEWNS)
syscalls.mount("none", "/", flags=syscalls.MS_REC | syscalls.MS_PRIVATE)
syscalls.mount("tmpfs", target, "tmpfs", 0, "size=1m,mode=0700")
(target / "f").write_text("in tmpfs")
assert oct(os.stat(target).st_mode & 0o777) == "0o700"
syscalls.umount(target)
assert not (target / "f").exists()
print("ok")
"""


@needs_root
def test_mount_and_umount_a_tmpfs_in_a_namespace_of_its_own(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    out = subprocess.run([sys.executable, "-c", _MOUNT_IN_OWN_NAMESPACE, str(target)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "ok"
    assert not (target / "f").exists()  # never visible out here


@needs_root
def test_failures_are_oserrors_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(OSError) as caught:
        syscalls.umount(tmp_path)  # not a mount point
    assert caught.value.errno == errno.EINVAL and caught.value.filename == str(tmp_path)
    with pytest.raises(OSError) as missing:
        syscalls.mount("tmpfs", tmp_path / "absent", "tmpfs")
    assert missing.value.errno == errno.ENOENT and missing.value.filename == str(tmp_path / "absent")


def test_start_writeback(tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x" * 100_000)
        f.flush()
        syscalls.start_writeback(f.fileno())  # returns at once
    with pytest.raises(OSError) as caught:
        syscalls.start_writeback(-1)
    assert caught.value.errno == errno.EBADF


def test_importing_it_loads_no_ctypes() -> None:
    code = "import sys, lamina.syscalls; print('ctypes' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_cpus_are_those_this_process_may_run_on() -> None:
    assert syscalls.cpus() == len(os.sched_getaffinity(0)) >= 1
