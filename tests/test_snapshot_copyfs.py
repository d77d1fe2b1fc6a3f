"""The copying snapshotter: applying snapshots, and changes as an overlay-format upper dir."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.snapshot.copyfs import CopySnapshotter, apply_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted xattrs)")


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR, 0)


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_apply_layer_honours_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    bottom, top, root = tmp_path / "bottom", tmp_path / "top", tmp_path / "root"
    (bottom / "opt").mkdir(parents=True)
    (bottom / "opt/old").write_text("old")
    (bottom / "gone").write_text("gone")
    (bottom / "dir").mkdir()
    (bottom / "dir/keep").write_text("keep")
    (bottom / "a").write_text("a")
    os.link(bottom / "a", bottom / "b")
    (top / "opt").mkdir(parents=True)
    os.setxattr(top / "opt", "trusted.overlay.opaque", b"y")
    (top / "opt/new").write_text("new")
    whiteout(top / "gone")
    (top / "dir").mkdir()
    os.chmod(top / "dir", 0o700)
    root.mkdir()
    apply_layer(bottom, root)
    apply_layer(top, root)
    assert sorted(os.listdir(root)) == ["a", "b", "dir", "opt"]
    assert os.listdir(root / "opt") == ["new"]
    assert "trusted.overlay.opaque" not in os.listxattr(root / "opt")
    assert (root / "dir/keep").read_text() == "keep"
    assert stat.S_IMODE(os.lstat(root / "dir").st_mode) == 0o700
    assert os.lstat(root / "a").st_ino == os.lstat(root / "b").st_ino  # links within a layer kept
    assert os.lstat(root / "a").st_ino != os.lstat(bottom / "a").st_ino  # but never into the lower


def test_unchanged_tree_gives_an_empty_upper(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/f").write_text("f")
    with CopySnapshotter().prepare([lower], tmp_path / "work") as mount:
        assert (mount.root / "etc/f").read_text() == "f"
        (mount.root / "etc/f").read_text()
    assert os.listdir(mount.upper) == []
    mount.unmount()  # idempotent
    mount.discard()
    assert os.listdir(tmp_path / "work") == []


def test_changes_appear_in_overlay_format(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "usr/share").mkdir(parents=True)
    (lower / "usr/share/doc").write_text("doc")
    (lower / "var/cache").mkdir(parents=True)
    (lower / "var/cache/x").write_text("x")
    (lower / "file").write_text("file")
    with CopySnapshotter().prepare([lower], tmp_path / "work") as mount:
        with open(mount.root / "usr/share/doc", "a") as doc:
            doc.write(" more")
        subprocess.run(["rm", "-rf", str(mount.root / "var/cache")], check=True)
        (mount.root / "var/cache").mkdir()
        os.unlink(mount.root / "file")
        (mount.root / "file").mkdir()  # a file replaced by a dir: nothing to hide
    upper = mount.upper
    assert (upper / "usr/share/doc").read_text() == "doc more"
    assert (lower / "usr/share/doc").read_text() == "doc"
    assert os.getxattr(upper / "var/cache", "trusted.overlay.opaque") == b"y"
    assert os.listdir(upper / "var/cache") == []
    assert "trusted.overlay.opaque" not in os.listxattr(upper / "file")
    assert sorted(os.listdir(upper)) == ["file", "usr", "var"]
    mount.discard()


def test_deleting_a_tree_needs_one_whiteout(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "a/b/c").mkdir(parents=True)
    (lower / "a/b/c/d").write_text("d")
    (lower / "a/other").write_text("o")
    with CopySnapshotter().prepare([lower], tmp_path / "work") as mount:
        subprocess.run(["rm", "-rf", str(mount.root / "a/b")], check=True)
    assert os.listdir(mount.upper / "a") == ["b"]
    assert is_whiteout(mount.upper / "a/b")
    mount.discard()


def test_failure_in_the_block_discards(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    with pytest.raises(RuntimeError), CopySnapshotter().prepare([lower], tmp_path / "work"):
        raise RuntimeError("step failed")
    assert os.listdir(tmp_path / "work") == []


def test_cleanup_removes_what_a_dead_process_left(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    work = tmp_path / "work"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from lamina.snapshot import CopySnapshotter\n"
        "CopySnapshotter().prepare([Path(sys.argv[1])], Path(sys.argv[2]))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(lower), str(work)], check=True)
    alive = CopySnapshotter().prepare([lower], work)
    try:
        assert len(os.listdir(work)) == 2
        assert CopySnapshotter().cleanup_stale(work) == 1
        assert os.listdir(work) == [alive.root.parent.name]
    finally:
        alive.discard()
