"""Overlay mounts of snapshots: merged views, many layers, scratch, cleanup, safety."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from lamina.errors import RuntimeError_
from lamina.snapshot import OverlaySnapshotter, available, unpack_layer
from lamina.snapshot.overlay import _unescape, mounts_under

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not available(Path(tempfile.gettempdir())),
        reason="needs root and a working overlay mount",
    ),
]


def make_tar(*members: tuple[str, bytes, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def snapshot(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.mkdir(parents=True)
    unpack_layer(io.BytesIO(data), path)
    return path


def test_whiteouts_and_opaque_dirs_hide_lower_content(tmp_path: Path) -> None:
    snaps = tmp_path / "snapshots"
    base = snapshot(
        snaps,
        "base",
        make_tar(
            ("etc", tarfile.DIRTYPE, b""),
            ("etc/passwd", tarfile.REGTYPE, b"root"),
            ("etc/shadow", tarfile.REGTYPE, b"secret"),
            ("opt", tarfile.DIRTYPE, b""),
            ("opt/old", tarfile.REGTYPE, b"old"),
        ),
    )
    top = snapshot(
        snaps,
        "top",
        make_tar(
            ("etc", tarfile.DIRTYPE, b""),
            ("etc/.wh.shadow", tarfile.REGTYPE, b""),
            ("opt", tarfile.DIRTYPE, b""),
            ("opt/.wh..wh..opq", tarfile.REGTYPE, b""),
            ("opt/new", tarfile.REGTYPE, b"new"),
        ),
    )
    mount = OverlaySnapshotter().prepare([top, base], tmp_path / "work")
    try:
        assert sorted(os.listdir(mount.root / "etc")) == ["passwd"]
        assert sorted(os.listdir(mount.root / "opt")) == ["new"]
        assert (mount.root / "etc/passwd").read_text() == "root"
    finally:
        mount.discard()
    assert os.listdir(tmp_path / "work") == []


def test_writes_go_to_the_upper_dir_only(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "f").write_text("lower")
    with OverlaySnapshotter().prepare([lower], tmp_path / "work") as mount:
        (mount.root / "f").write_text("upper")
        assert mount.root in mounts_under(tmp_path)
    assert mount.root not in mounts_under(tmp_path)  # leaving the block unmounts
    assert (lower / "f").read_text() == "lower"
    assert (mount.upper / "f").read_text() == "upper"
    kept = tmp_path / "kept"
    os.rename(mount.upper, kept)  # the builder keeps the upper dir as the new snapshot
    mount.discard()
    assert (kept / "f").read_text() == "upper"
    assert os.listdir(tmp_path / "work") == []


def test_scratch_has_an_empty_root(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        mount = OverlaySnapshotter().prepare([], tmp_path / "work")
    finally:
        os.umask(old)
    with mount:
        assert os.listdir(mount.root) == []
        assert stat.S_IMODE(os.stat(mount.root).st_mode) == 0o755
        (mount.root / "hello").write_text("hi")
    assert os.listdir(mount.upper) == ["hello"]
    mount.discard()


def test_an_error_in_the_block_discards_everything(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "f").write_text("keep me")
    with pytest.raises(ValueError), OverlaySnapshotter().prepare([lower], tmp_path / "work") as mount:
        (mount.root / "g").write_text("x")
        raise ValueError("step failed")
    assert mounts_under(tmp_path) == ()
    assert os.listdir(tmp_path / "work") == []
    assert (lower / "f").read_text() == "keep me"


def many_lowers(snaps: Path, count: int) -> list[Path]:
    lowers = []
    for i in range(count):
        path = snaps / f"{i:064x}"
        path.mkdir(parents=True)
        (path / f"file{i}").write_text(str(i))
        (path / "top").write_text(str(i))
        lowers.append(path)
    return lowers[::-1]  # top-most first


def mount_options(point: Path) -> str:
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split(" ")
            if fields[4] == str(point):
                return fields[-1]
    raise AssertionError(f"{point} is not mounted")


def test_many_layers_mount_through_relative_paths(tmp_path: Path) -> None:
    lowers = many_lowers(tmp_path / "snapshots", 55)  # absolute paths are well over a page
    with OverlaySnapshotter().prepare(lowers, tmp_path / "work") as mount:
        assert ",lowerdir=" + "0" * 62 + "36:" in mount_options(mount.root)  # relative to snapshots/
        assert (mount.root / "top").read_text() == "54"
        assert len(os.listdir(mount.root)) == 56
    mount.discard()


def test_too_many_layers_for_one_page_is_an_error(tmp_path: Path) -> None:
    lowers = many_lowers(tmp_path / "snapshots", 80)
    with pytest.raises(RuntimeError_, match="too many layers"):
        OverlaySnapshotter().prepare(lowers, tmp_path / "work")
    assert os.listdir(tmp_path / "work") == []


def test_renaming_a_lower_directory_copies_it_up(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "src/deep").mkdir(parents=True)
    (lower / "src/deep/f").write_text("content")
    with OverlaySnapshotter().prepare([lower], tmp_path / "work") as mount:
        subprocess.run(["mv", str(mount.root / "src"), str(mount.root / "dst")], check=True)
    assert (mount.upper / "dst/deep/f").read_text() == "content"  # full content, not a redirect
    mount.discard()


def test_cleanup_removes_what_a_dead_process_left(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    work = tmp_path / "work"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from lamina.snapshot import OverlaySnapshotter\n"
        "OverlaySnapshotter().prepare([Path(sys.argv[1])], Path(sys.argv[2]))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(lower), str(work)], check=True)
    assert len(mounts_under(work)) == 1
    alive = OverlaySnapshotter().prepare([lower], work)
    try:
        assert OverlaySnapshotter().cleanup_stale(work) == 1
        assert mounts_under(work) == (alive.root,)  # a live mount is left alone
        assert len(os.listdir(work)) == 1
    finally:
        alive.discard()
    assert OverlaySnapshotter().cleanup_stale(work) == 0


def test_paths_overlay_cannot_parse_are_refused(tmp_path: Path) -> None:
    lower = tmp_path / "a,b"
    lower.mkdir()
    with pytest.raises(RuntimeError_, match="may not contain"):
        OverlaySnapshotter().prepare([lower], tmp_path / "work")
    assert os.listdir(tmp_path / "work") == []


def test_mountinfo_escapes_are_undone() -> None:
    assert _unescape("/a\\040b\\011c\\134d") == "/a b\tc\\d"


# --- the probe's record (performance: one test mount per kernel and filesystem, not per build) ---

def _no_mount(probe_dir: str) -> None:
    raise AssertionError("probed again")


def test_a_probe_is_remembered_for_later_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.snapshot import overlay

    record = tmp_path / "overlay-probe"
    assert available(tmp_path / "mounts", record)
    key, options = record.read_text().splitlines()
    assert key == f"{os.uname().release} dev={os.stat(tmp_path / 'mounts').st_dev}"
    overlay._probe.cache_clear()  # as a new process
    monkeypatch.setattr(overlay, "_probe_mount", _no_mount)
    assert available(tmp_path / "mounts", record)
    with OverlaySnapshotter(record).prepare([], tmp_path / "mounts") as mount:
        (mount.root / "f").write_text("x")
    assert (mount.upper / "f").read_text() == "x"
    assert tuple(options.split(",")) in overlay._OPTION_SETS
    mount.discard()


def test_a_record_of_another_kernel_or_filesystem_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.snapshot import overlay

    record = tmp_path / "overlay-probe"
    record.write_text("0.0.0-other dev=1\nredirect_dir=off\n")
    probed: list[str] = []
    real = overlay._probe_mount

    def counted(probe_dir: str) -> tuple[str, ...] | None:
        probed.append(probe_dir)
        return real(probe_dir)

    monkeypatch.setattr(overlay, "_probe_mount", counted)
    overlay._probe.cache_clear()
    assert available(tmp_path / "mounts", record)
    assert len(probed) == 1
    assert record.read_text().startswith(os.uname().release + " ")


def test_a_garbled_record_means_a_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.snapshot import overlay

    (tmp_path / "mounts").mkdir()
    record = tmp_path / "overlay-probe"
    key = overlay._probe_key(str(tmp_path / "mounts"))
    record.write_text(f"{key}\nlowerdir=/etc,upperdir=/tmp\n")  # not an option set the probe tries
    overlay._probe.cache_clear()
    assert overlay._remembered(str(record), key) is None
    assert available(tmp_path / "mounts", record)
    assert record.read_text() != f"{key}\nlowerdir=/etc,upperdir=/tmp\n"


def test_a_stale_record_is_forgotten_when_its_options_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.snapshot import overlay

    (tmp_path / "mounts").mkdir()
    record = tmp_path / "overlay-probe"
    key = overlay._probe_key(str(tmp_path / "mounts"))
    stale = ("redirect_dir=off",)
    record.write_text(f"{key}\n{','.join(stale)}\n")
    real = overlay._mount_overlay

    def refuse_stale(*args: object) -> None:
        if args[-1] == stale:
            raise RuntimeError_("mounting overlay: Invalid argument")
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(overlay, "_mount_overlay", refuse_stale)
    overlay._probe.cache_clear()
    with OverlaySnapshotter(record).prepare([], tmp_path / "mounts") as mount:
        (mount.root / "f").write_text("x")
    assert record.read_text().splitlines()[1] != ",".join(stale)


def test_without_a_record_nothing_is_written(tmp_path: Path) -> None:
    from lamina.snapshot import overlay

    overlay._probe.cache_clear()
    assert available(tmp_path / "mounts")
    assert os.listdir(tmp_path) == ["mounts"]
    assert os.listdir(tmp_path / "mounts") == []


def test_a_mount_briefly_held_by_a_forked_child_still_unmounts(tmp_path: Path) -> None:
    """A parallel stage's fork copies our open files until it execs: unmount waits, then succeeds."""
    import subprocess
    import time

    lower = tmp_path / "lower"
    lower.mkdir()
    with OverlaySnapshotter().prepare([lower], tmp_path / "work") as mount:
        (mount.root / "held").write_text("x")
        holder = subprocess.Popen(["sh", "-c", "exec 3<held; sleep 0.3"], cwd=mount.root)
        time.sleep(0.1)
        mount.unmount()  # EBUSY while the child holds the file: retried, not an error
        assert (mount.upper / "held").read_text() == "x"
        holder.wait()
