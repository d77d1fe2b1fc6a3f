"""Chroot-style resolution never leaves the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.rootpath import MAX_SYMLINKS, clean, resolve_in_root
from lamina.errors import BuildError


@pytest.mark.parametrize(("path", "cleaned"), [
    ("", "."),
    ("a/b/../c", "a/c"),
    ("/../a", "/a"),
    ("//a//b/", "/a/b"),
    ("../a", "../a"),
    ("a/../..", ".."),
    ("./", "."),
    ("/", "/"),
])
def test_clean(path: str, cleaned: str) -> None:
    assert clean(path) == cleaned


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr/lib").mkdir(parents=True)
    (r / "lib").symlink_to("usr/lib")
    (r / "abs").symlink_to("/usr/lib")
    (r / "escape").symlink_to("../../../../../..")
    (r / "etc-host").symlink_to("/etc")
    (r / "file").write_text("x")
    (r / "final").symlink_to("file")
    return r


@pytest.mark.parametrize(("path", "follow", "expected"), [
    ("/", True, ""),
    ("/usr/lib/x", True, "usr/lib/x"),
    ("/lib/x", True, "usr/lib/x"),
    ("/abs/x", True, "usr/lib/x"),
    ("/escape/x", True, "x"),
    ("/../../x", True, "x"),
    ("/etc-host/passwd", True, "etc/passwd"),
    ("/final", True, "file"),
    ("/final", False, "final"),
    ("/lib", False, "lib"),
    ("/missing/a/../b", True, "missing/b"),
    ("relative/path", True, "relative/path"),
])
def test_resolve(root: Path, path: str, follow: bool, expected: str) -> None:
    result = resolve_in_root(root, path, follow_final=follow)
    assert result == root.joinpath(*expected.split("/")) if expected else result == root
    assert result == root or root in result.parents


def test_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(BuildError, match="too many levels"):
        resolve_in_root(tmp_path, "/a/x", follow_final=True)


def test_limit_allows_long_chains(tmp_path: Path) -> None:
    for i in range(MAX_SYMLINKS):
        (tmp_path / f"l{i}").symlink_to(f"l{i + 1}")
    (tmp_path / f"l{MAX_SYMLINKS}").mkdir()
    assert resolve_in_root(tmp_path, "/l0", follow_final=True) == tmp_path / f"l{MAX_SYMLINKS}"
