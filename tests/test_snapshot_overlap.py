"""Two upper dirs over the same lowers: which of the second's paths the first changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.snapshot._fs import OPAQUE_XATTR
from lamina.snapshot.overlap import overlaps, symlink_on_path

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="trusted.* xattrs and whiteouts need root")


def _tree(root: Path, *paths: str) -> Path:
    """Dirs end with /, the rest are files."""
    root.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = root / path
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path)
    return root


def test_disjoint_uppers_do_not_overlap(tmp_path: Path) -> None:
    below = _tree(tmp_path / "below", "var/data/x")
    layer = _tree(tmp_path / "layer", "app/src/a.c")
    assert not overlaps(below, layer, "/app/src")


def test_a_directory_both_only_passed_through_is_looked_into(tmp_path: Path) -> None:
    below = _tree(tmp_path / "below", "etc/run.conf", "usr/local/bin/tool")
    layer = _tree(tmp_path / "layer", "etc/app/f", "usr/local/app/")
    assert not overlaps(below, layer, "/etc/app/f")
    (below / "etc/app").mkdir()
    (below / "etc/app/f").write_text("run")
    assert overlaps(below, layer, "/etc/app/f")


def test_the_same_directory_with_another_mode_or_owner(tmp_path: Path) -> None:
    below = _tree(tmp_path / "below", "etc/run.conf")
    layer = _tree(tmp_path / "layer", "etc/app/f")
    os.chmod(below / "etc", 0o700)
    assert overlaps(below, layer, "/etc/app/f")
    os.chmod(below / "etc", 0o755)
    os.chmod(layer / "etc", 0o755)
    assert not overlaps(below, layer, "/etc/app/f")
    if os.geteuid() == 0:
        os.chown(below / "etc", 5, 5)
        assert overlaps(below, layer, "/etc/app/f")


@needs_root
def test_an_opaque_directory_or_a_whiteout_below(tmp_path: Path) -> None:
    below = _tree(tmp_path / "below", "app/")
    layer = _tree(tmp_path / "layer", "app/f")
    assert not overlaps(below, layer, "/app/f")
    os.setxattr(below / "app", OPAQUE_XATTR, b"y")
    assert overlaps(below, layer, "/app/f")
    os.rmdir(below / "app")
    os.mknod(below / "app", 0o600 | 0o020000, os.makedev(0, 0))  # overlay's whiteout
    assert overlaps(below, layer, "/app/f")


def test_the_destination_or_its_parents_changed_below(tmp_path: Path) -> None:
    layer = _tree(tmp_path / "layer")  # the step wrote nothing (an empty source)
    below = _tree(tmp_path / "below")
    (below / "app").symlink_to("/data")
    assert overlaps(below, layer, "/app/f")
    assert not overlaps(below, layer, "/other/f")


def test_symlink_on_path(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root", "etc/", "data/")
    (root / "link").symlink_to("/data")
    assert symlink_on_path(root, "/link/f")
    assert symlink_on_path(root, "/link")
    assert not symlink_on_path(root, "/etc/app/f")
    assert not symlink_on_path(root, "/new/dir/f")
