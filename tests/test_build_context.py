"""Selecting COPY sources from the context, and their content checksum."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.build.context import SourceRoot, checksum, select
from lamina.build.dockerignore import IgnoreMatcher
from lamina.errors import ContextError


def make(tmp_path: Path, files: dict[str, str], ignore: list[str] | None = None) -> SourceRoot:
    context = tmp_path / "ctx"
    context.mkdir(parents=True)
    for name, content in files.items():
        path = context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(content)
    return SourceRoot.context(context, IgnoreMatcher.from_patterns(ignore or []))


FILES = {
    "a1.txt": "a1", "a2.txt": "a2", "b.txt": "b", "c.md": "c",
    "sub1/x.txt": "x1", "sub2/x.txt": "x2", "sub2/y.log": "y",
    "dir1/one": "1", "dir2/deeper/three": "3",
    "secrets/private.txt": "p", "secrets/public.txt": "P", "a/temp1": "t", "b/c/temp2": "t",
}


@pytest.mark.parametrize(("patterns", "expected"), [  # 046 and friends
    (["a*.txt"], ["a1.txt", "a2.txt"]),
    (["?.txt"], ["b.txt"]),
    (["[ab]*.txt"], ["a1.txt", "a2.txt", "b.txt"]),
    (["sub*/x.txt"], ["sub1/x.txt", "sub2/x.txt"]),
    (["nomatch*", "c.md"], ["c.md"]),
    (["dir*"], ["dir1", "dir2"]),
    (["./c.md"], ["c.md"]),
    (["/c.md"], ["c.md"]),
    (["sub2/../c.md"], ["c.md"]),
    (["."], [""]),
    (["nomatch*"], []),
])
def test_select_names(tmp_path: Path, patterns: list[str], expected: list[str]) -> None:
    root = make(tmp_path, FILES)
    assert [s.relpath for s in select(root, patterns)] == expected


def test_dot_dot_is_clamped_at_the_root(tmp_path: Path) -> None:  # 091
    root = make(tmp_path, {"inside.txt": "in"})
    (tmp_path / "outside.txt").write_text("leaked")
    with pytest.raises(ContextError, match='"/outside.txt" not found'):
        select(root, ["../outside.txt"])


@pytest.mark.parametrize("pattern", ["missing.txt", "missing/*.txt", "secrets/private.txt", "a/temp1"])
def test_missing_or_ignored_is_not_found(tmp_path: Path, pattern: str) -> None:
    root = make(tmp_path, FILES, ["secrets", "!secrets/public.txt", "*/temp*"])
    with pytest.raises(ContextError, match="not found"):
        select(root, [pattern])


def test_ignored_files_are_invisible(tmp_path: Path) -> None:  # 054
    root = make(tmp_path, FILES, ["secrets", "!secrets/public.txt", "*/temp*"])
    (whole,) = select(root, ["."])
    paths = {e.relpath for e in whole.entries}
    assert {"secrets", "secrets/public.txt", "b/c/temp2", "a"} <= paths
    assert not paths & {"secrets/private.txt", "a/temp1"}
    (secrets,) = select(root, ["secrets"])
    assert [e.relpath for e in secrets.entries] == ["", "public.txt"]
    assert [s.relpath for s in select(root, ["sec*"])] == ["secrets"]


def test_fully_ignored_dir_is_skipped(tmp_path: Path) -> None:
    root = make(tmp_path, {"keep": "k", "node_modules/x/y": "z"}, ["node_modules"])
    (whole,) = select(root, ["."])
    assert [e.relpath for e in whole.entries] == ["", "keep"]


def test_symlinked_source_is_followed_inside_the_context(tmp_path: Path) -> None:
    root = make(tmp_path, {"real/f": "f", "etc/passwd": "context passwd"})
    (root.path / "link").symlink_to("real")
    (root.path / "pw").symlink_to("/etc/passwd")
    (root.path / "real/inner").symlink_to("/etc/shadow")
    (link,) = select(root, ["link"])
    assert (link.relpath, link.real, link.name) == ("link", "real", "link")
    inner = {e.relpath: e for e in link.entries}["inner"]
    assert (inner.kind, inner.link_target) == ("symlink", "/etc/shadow")  # links inside are kept
    (pw,) = select(root, ["pw"])
    assert pw.real == "etc/passwd" and pw.entries[0].kind == "file"


def test_dangling_link_outside_is_not_found(tmp_path: Path) -> None:
    root = make(tmp_path, {})
    (root.path / "out").symlink_to("../../../../etc/hostname")
    with pytest.raises(ContextError, match="not found"):
        select(root, ["out"])


def test_entries_order_and_metadata(tmp_path: Path) -> None:
    root = make(tmp_path, {"d/b": "b", "d/a/z": "z", "d/B": "B"})
    os.chmod(root.path / "d/b", 0o4755)
    (d,) = select(root, ["d"])
    assert [e.relpath for e in d.entries] == ["", "B", "a", "a/z", "b"]
    assert {e.relpath: e.mode for e in d.entries}["b"] == 0o4755


class MemoryCache:
    def __init__(self) -> None:
        self.data: dict[tuple[str, int, int, int, int], str] = {}
        self.reads = 0

    def get(self, path: str, size: int, mtime_ns: int, ino: int, mode: int) -> str | None:
        found = self.data.get((path, size, mtime_ns, ino, mode))
        self.reads += found is not None
        return found

    def put(self, path: str, size: int, mtime_ns: int, ino: int, mode: int, digest: str) -> None:
        self.data[(path, size, mtime_ns, ino, mode)] = digest


def test_checksum_covers_content_mode_and_links_not_mtime_or_owner(tmp_path: Path) -> None:
    root = make(tmp_path, {"d/f": "one", "d/g": "two"}, ["d/ignored"])

    def digest() -> str:
        return checksum(root, select(root, ["d"]))

    first = digest()
    os.utime(root.path / "d/f", (1, 1))
    os.chown(root.path / "d/f", 123, 456)
    assert digest() == first
    (root.path / "d/ignored").write_text("invisible")
    assert digest() == first
    os.chmod(root.path / "d/f", 0o600)
    second = digest()
    assert second != first
    (root.path / "d/f").write_text("ONE")
    assert digest() != second
    third = digest()
    os.symlink("f", root.path / "d/l")
    fourth = digest()
    assert fourth != third
    os.unlink(root.path / "d/g")
    os.link(root.path / "d/f", root.path / "d/g")
    (root.path / "d/f").write_text("two")
    assert digest() != fourth  # same bytes as before, but now a hard link


def test_checksum_is_machine_independent_and_uses_cache(tmp_path: Path) -> None:
    one = make(tmp_path / "1", {"x/a": "a", "x/b/c": "c"})
    two = make(tmp_path / "2", {"x/b/c": "c", "x/a": "a"})
    assert checksum(one, select(one, ["x"])) == checksum(two, select(two, ["x"]))
    cache = MemoryCache()
    first = checksum(one, select(one, ["x"]), cache)
    assert checksum(one, select(one, ["x"]), cache) == first
    assert cache.reads == 2


def test_stage_checksum_counts_owners(tmp_path: Path) -> None:
    stage_dir = tmp_path / "stage"
    (stage_dir / "out").mkdir(parents=True)
    (stage_dir / "out/f").write_text("f")
    stage = SourceRoot.stage(stage_dir)
    before = checksum(stage, select(stage, ["/out"]))
    os.chown(stage_dir / "out/f", 5, 5)
    assert checksum(stage, select(stage, ["/out"])) != before
