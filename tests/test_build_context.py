"""Selecting COPY sources from the context, and their content checksum."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.build.context import Selected, SourceRoot, checksum, select
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


# --parents and --exclude ------------------------------------------------------------

def _paths(selected: list[Selected]) -> list[tuple[str, list[str]]]:
    return [(s.relpath, [e.relpath for e in s.entries]) for s in selected]


TREE = {"x/a.txt": "xa", "y/a.txt": "ya", "x/y/a.txt": "xya", "x/y/b.txt": "xyb", "x/y/c.md": "c",
        "src/a.txt": "1", "src/x/b.txt": "2", "src/x/y/c.txt": "3", "src/x/y/d.md": "4", "lone/": ""}


@pytest.mark.parametrize(("patterns", "expected"), [  # the Dockerfile reference's examples, then edges
    (["./x/a.txt", "./y/a.txt"], [("", ["", "x", "x/a.txt"]), ("", ["", "y", "y/a.txt"])]),
    (["./x/./y/*.txt"], [("x", ["", "y", "y/a.txt", "y/b.txt"])]),
    (["./src/**/*.txt"], [("", ["", "src", "src/a.txt", "src/x", "src/x/b.txt", "src/x/y", "src/x/y/c.txt"])]),
    (["x/y"], [("", ["", "x", "x/y", "x/y/a.txt", "x/y/b.txt", "x/y/c.md"])]),
    (["/x/./y"], [("x", ["", "y", "y/a.txt", "y/b.txt", "y/c.md"])]),
    (["x/./"], [("x", ["", "a.txt", "y", "y/a.txt", "y/b.txt", "y/c.md"])]),
    (["lone"], [("", ["", "lone"])]),
    (["nomatch*.txt"], [("", [""])]),  # an empty wildcard copies nothing but the destination dir
])
def test_parents_keep_the_path_below_the_pivot(tmp_path: Path, patterns: list[str],
                                               expected: list[tuple[str, list[str]]]) -> None:
    assert _paths(select(make(tmp_path, TREE), patterns, parents=True)) == expected


@pytest.mark.parametrize("pattern", ["nothere.txt", "x/nothere", "nothere/./a.txt", "x/a.txt/./b"])
def test_parents_literal_missing_is_not_found(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ContextError, match="not found$"):
        select(make(tmp_path, TREE), [pattern], parents=True)


def test_parents_respect_dockerignore(tmp_path: Path) -> None:
    root = make(tmp_path, TREE, ignore=["x/y/b.txt", "src"])
    assert _paths(select(root, ["x/**/*.txt", "src/**"], parents=True)) == [
        ("", ["", "x", "x/a.txt", "x/y", "x/y/a.txt"]), ("", [""])]


EXCLUDED = {"dir1/file-101.png": "2", "dir1/file-102.txt": "3", "dir1/file-103.jpeg": "4",
            "dir2/file-201.pdf": "6", "dir2/file-202.jpeg": "7", "dir2/file-203.png": "8",
            "dir3/file-301.mp3": "9", "dir3/file-302.mpeg": "10"}


def _files(selected: list[Selected]) -> list[str]:
    return sorted(_join(s.relpath, e.relpath) for s in selected for e in s.entries if e.kind == "file")


def _join(a: str, b: str) -> str:
    return "/".join(p for p in (a, b) if p)


@pytest.mark.parametrize(("patterns", "excludes", "expected"), [  # BuildKit's testExcludedFilesOnCopy
    (["."], ["*/*.png", "*/*.jpeg"], ["dir1/file-102.txt", "dir2/file-201.pdf", "dir3/file-301.mp3",
                                      "dir3/file-302.mpeg"]),
    (["dir3/"], ["*.mp3"], ["dir3/file-302.mpeg"]),
    (["dir*"], ["*.mp3", "*.jpeg", "*.png", "*.pdf", "*.txt"], ["dir3/file-302.mpeg"]),
    (["dir*"], ["*.mp*", "*.jpeg", "*.png", "*.pdf"], ["dir1/file-102.txt"]),
    (["dir*"], ["*"], []),
    (["dir1/file-10*"], ["*.txt"], ["dir1/file-101.png", "dir1/file-103.jpeg"]),  # the reference's hom* example
    (["dir1/file-102.txt"], ["*.txt"], ["dir1/file-102.txt"]),  # a literal source is never excluded itself
    (["."], ["dir1", "dir2", "!dir2/file-203.png", "dir3/*.mp3"], ["dir2/file-203.png", "dir3/file-302.mpeg"]),
    (["."], ["**/*.p*"], ["dir1/file-102.txt", "dir1/file-103.jpeg", "dir2/file-202.jpeg", "dir3/file-301.mp3",
                          "dir3/file-302.mpeg"]),
])
def test_exclude_matches_paths_below_each_source(tmp_path: Path, patterns: list[str], excludes: list[str],
                                                expected: list[str]) -> None:
    assert _files(select(make(tmp_path, EXCLUDED), patterns, excludes=excludes)) == expected


def test_exclude_keeps_dirs_as_parents_and_the_source_itself(tmp_path: Path) -> None:
    root = make(tmp_path, EXCLUDED)
    assert _paths(select(root, ["."], excludes=["dir1", "dir2", "!dir2/file-203.png", "dir3"])) == [
        ("", ["", "dir2", "dir2/file-203.png"])]
    assert _paths(select(root, ["dir*"], excludes=["*"])) == [("dir1", [""]), ("dir2", [""]), ("dir3", [""])]
    assert _paths(select(root, ["./dir1/./"], parents=True, excludes=["*.png", "*.txt"])) == [
        ("dir1", ["", "file-103.jpeg"])]


def test_exclude_bad_pattern_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match=r"^--exclude: syntax error in pattern '\['$"):
        select(make(tmp_path, EXCLUDED), ["."], excludes=["["])


def test_checksum_covers_only_what_exclude_lets_through(tmp_path: Path) -> None:
    root = make(tmp_path, EXCLUDED)
    before = checksum(root, select(root, ["."], excludes=["**/*.png"]))
    (root.path / "dir1" / "file-101.png").write_text("changed")
    assert checksum(root, select(root, ["."], excludes=["**/*.png"])) == before
    (root.path / "dir1" / "file-102.txt").write_text("changed")
    assert checksum(root, select(root, ["."], excludes=["**/*.png"])) != before


# the walk and checksum over plain string paths (performance) give what they always gave -----------

class _Keys:
    """A stat cache that records the keys it is asked for and knows nothing."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def get(self, path: str, size: int, mtime_ns: int, ino: int, mode: int) -> str | None:
        self.keys.append(path)
        return None

    def put(self, path: str, size: int, mtime_ns: int, ino: int, mode: int, digest: str) -> None:
        pass


def _golden_tree(base: Path) -> None:
    (base / "app/sub").mkdir(parents=True)
    (base / "app/run.sh").write_text("#!/bin/sh\n")
    (base / "app/sub/data").write_bytes(bytes(range(256)))
    os.link(base / "app/sub/data", base / "app/sub/again")
    os.symlink("../run.sh", base / "app/sub/link")
    (base / os.fsdecode(b"app/caf\xe9")).write_text("latin-1 name")
    (base / "app/Z").write_text("upper case sorts first")
    for path in (base / "app", base / "app/sub"):
        os.chmod(path, 0o755)
    for name in ("Z", os.fsdecode(b"caf\xe9"), "sub/data"):
        os.chmod(base / "app" / name, 0o644)
    os.chmod(base / "app/run.sh", 0o4755)


GOLDEN = "sha256:30617c565f06b9bf09d7326e5eb8e7d812dd5fab667b3e407263baa6ccb17484"


def test_checksum_is_pinned_and_cache_keys_are_host_paths(tmp_path: Path) -> None:
    _golden_tree(tmp_path)
    root = SourceRoot.context(tmp_path)
    keys = _Keys()
    assert checksum(root, select(root, ["app"]), keys) == GOLDEN
    expected = ["app/Z", os.fsdecode(b"app/caf\xe9"), "app/run.sh", "app/sub/again", "app/sub/data"]
    assert keys.keys == [str(tmp_path / p) for p in expected]


def test_a_relative_context_keys_the_cache_as_pathlib_spells_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _golden_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    root = SourceRoot.context(Path("."))
    keys = _Keys()
    assert checksum(root, select(root, ["app/"]), keys) == GOLDEN
    assert keys.keys[0] == str(Path(".") / "app/Z") == "app/Z"
    file_source = select(root, ["app/Z"])
    checksum(root, file_source, keys)
    assert keys.keys[-1] == "app/Z"
