"""copy_fd: in-kernel copies with fallbacks, across filesystems (ext4 → overlayfs included)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.snapshot import filecopy
from lamina.snapshot.filecopy import copy_fd

DATA = bytes(range(256)) * 5000  # 1.28 MB, not a multiple of any buffer size


def _copy(src: Path, dst: Path) -> int:
    fd_in = os.open(src, os.O_RDONLY)
    fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        return copy_fd(fd_in, fd_out)
    finally:
        os.close(fd_in)
        os.close(fd_out)


def _fail(code: int):  # type: ignore[no-untyped-def]
    def method(fd_in: int, fd_out: int) -> int:
        raise OSError(code, os.strerror(code))
    return method


def test_copies_a_file(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(DATA)
    assert _copy(tmp_path / "src", tmp_path / "dst") == len(DATA)
    assert (tmp_path / "dst").read_bytes() == DATA


def test_copies_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"")
    assert _copy(tmp_path / "src", tmp_path / "dst") == 0
    assert (tmp_path / "dst").read_bytes() == b""


def test_starts_at_the_current_offsets(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"skip-" + DATA)
    (tmp_path / "dst").write_bytes(b"head:")
    fd_in = os.open(tmp_path / "src", os.O_RDONLY)
    fd_out = os.open(tmp_path / "dst", os.O_WRONLY)
    try:
        os.lseek(fd_in, 5, os.SEEK_SET)
        os.lseek(fd_out, 5, os.SEEK_SET)
        assert copy_fd(fd_in, fd_out) == len(DATA)
    finally:
        os.close(fd_in)
        os.close(fd_out)
    assert (tmp_path / "dst").read_bytes() == b"head:" + DATA


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL])
def test_falls_back_to_sendfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    monkeypatch.setattr(filecopy, "_copy_file_range", _fail(code))
    (tmp_path / "src").write_bytes(DATA)
    assert _copy(tmp_path / "src", tmp_path / "dst") == len(DATA)
    assert (tmp_path / "dst").read_bytes() == DATA


def test_falls_back_to_read_and_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filecopy, "_copy_file_range", _fail(errno.EXDEV))
    monkeypatch.setattr(filecopy, "_sendfile", _fail(errno.EINVAL))
    (tmp_path / "src").write_bytes(DATA)
    assert _copy(tmp_path / "src", tmp_path / "dst") == len(DATA)
    assert (tmp_path / "dst").read_bytes() == DATA


def test_continues_after_a_partial_in_kernel_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def once_then_exdev(fd_in: int, fd_out: int) -> int:
        if calls:
            raise OSError(errno.EXDEV, "cross-device")
        calls.append(1)
        return os.copy_file_range(fd_in, fd_out, 1000)

    monkeypatch.setattr(filecopy, "_copy_file_range", once_then_exdev)
    (tmp_path / "src").write_bytes(DATA)
    assert _copy(tmp_path / "src", tmp_path / "dst") == len(DATA)
    assert (tmp_path / "dst").read_bytes() == DATA


def test_real_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filecopy, "_copy_file_range", _fail(errno.ENOSPC))
    (tmp_path / "src").write_bytes(DATA)
    with pytest.raises(OSError) as caught:
        _copy(tmp_path / "src", tmp_path / "dst")
    assert caught.value.errno == errno.ENOSPC


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Path]:
    """A mounted overlayfs (the merged dir), as a COPY step writes into."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount overlayfs")
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / name).mkdir()
    options = f"lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/work"
    if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(tmp_path / "merged")],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("overlayfs cannot be mounted here")
    try:
        yield tmp_path / "merged"
    finally:
        subprocess.run(["umount", str(tmp_path / "merged")], check=True)


def test_copies_into_overlayfs_without_reading_in_python(
    overlay: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_read(fd: int, size: int) -> bytes:
        raise AssertionError("copied through Python")

    monkeypatch.setattr(os, "read", no_read)
    (tmp_path / "src").write_bytes(DATA)
    assert _copy(tmp_path / "src", overlay / "dst") == len(DATA)
    monkeypatch.undo()
    assert (overlay / "dst").read_bytes() == DATA
    assert (tmp_path / "upper" / "dst").read_bytes() == DATA
