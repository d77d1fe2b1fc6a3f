"""COPY/ADD into a plain temp root, checked against Docker's recorded conformance views."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from lamina.build.context import SourceRoot, select
from lamina.build.copy import Inline, copy_into, destination, link_chown, open_tar
from lamina.build.dockerignore import load_ignore
from lamina.build.remote import Remote
from lamina.errors import BuildError, ContextError
from lamina.store.store import Store

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "cases"
HARNESS_FILES = {"case.toml", "expected.json", "expected-view.json"}
BASE_TOP = {"bin", "dev", "etc", "home", "lib", "proc", "root", "sys", "tmp", "usr", "var"}


def fs_view(root: Path) -> dict[str, dict[str, object]]:
    """The conformance checker's view of a directory tree (type, mode, owner, content, links)."""
    out: dict[str, dict[str, object]] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = os.lstat(path)
            key = "/" + path.relative_to(root).as_posix()
            entry: dict[str, object] = {"uid": info.st_uid, "gid": info.st_gid}
            if stat.S_ISLNK(info.st_mode):
                entry.update(type="symlink", target=os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entry.update(type="dir", mode=f"{stat.S_IMODE(info.st_mode):04o}")
            elif stat.S_ISREG(info.st_mode):
                data = path.read_bytes()
                entry.update(type="file", mode=f"{stat.S_IMODE(info.st_mode):04o}", size=len(data),
                             sha256=hashlib.sha256(data).hexdigest())
                inodes.setdefault(info.st_ino, []).append(key)
            else:
                entry.update(type="other", mode=f"{stat.S_IMODE(info.st_mode):04o}")
            out[key] = entry
    for group in inodes.values():
        for key in group if len(group) > 1 else ():
            out[key]["links"] = sorted(k for k in group if k != key)
    return out


def stage_case(case: Path, dest: Path) -> dict[str, object]:
    """Stage a conformance case the way check.py does; return its case.toml."""
    meta = tomllib.loads((case / "case.toml").read_text())
    shutil.copytree(case, dest, symlinks=True, ignore=lambda d, names: [n for n in names if n in HARNESS_FILES])
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames:
            os.chmod(Path(dirpath) / name, 0o755)
        for name in filenames:
            path = Path(dirpath) / name
            os.chmod(path, 0o755 if os.lstat(path).st_mode & 0o100 else 0o644)
    os.chmod(dest, 0o755)
    if meta.get("setup"):
        subprocess.run(["sh", "-ec", "umask 022\n" + str(meta["setup"])], cwd=dest, check=True)
    return meta


def replay(dockerfile: str, context: Path, root: Path) -> None:
    """Run the COPY/ADD/WORKDIR lines of a Dockerfile against ``root`` (other lines ignored)."""
    source = SourceRoot.context(context, load_ignore(context, context / "Dockerfile"))
    workdir = "/"
    for line in dockerfile.splitlines():
        word, _, rest = line.partition(" ")
        if word == "WORKDIR":
            workdir = destination(rest, workdir)[0]
        if word not in ("COPY", "ADD"):
            continue
        try:
            args = json.loads(rest)  # invalid JSON falls back to the shell form, as in Docker
        except json.JSONDecodeError:
            args = shlex.split(rest)
        assert not any(a.startswith("--") for a in args)
        copy_into(root, select(source, args[:-1]), args[-1], src_root=source, workdir=workdir,
                  is_add=word == "ADD")


def added_paths(view: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    return {k: v for k, v in view.items() if k.split("/")[1] not in BASE_TOP}


REPLAYED = ["044", "046", "047", "052", "054", "056", "057", "061", "062"]


@pytest.mark.skipif(not CONFORMANCE.is_dir(), reason="conformance cases not available")
@pytest.mark.parametrize("number", REPLAYED)
def test_conformance_case_replay(number: str, tmp_path: Path) -> None:
    case = next(CONFORMANCE.glob(number + "-*"))
    context = tmp_path / "work" / "context"
    context.parent.mkdir()
    stage_case(case, context)
    root = tmp_path / "root"
    root.mkdir()
    replay((context / "Dockerfile").read_text(), context, root)
    expected = json.loads((case / "expected-view.json").read_text())["view"]["fs"]
    assert added_paths(fs_view(root)) == added_paths(expected)


def _ctx(tmp_path: Path, files: dict[str, str | bytes]) -> SourceRoot:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    for name, content in files.items():
        path = context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return SourceRoot.context(context)


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return root


def test_chown_applies_to_created_parents_and_contents(tmp_path: Path) -> None:  # 049
    src = _ctx(tmp_path, {"dir/inner.txt": "x\n", "f.txt": "f\n"})
    root = _root(tmp_path)
    copy_into(root, select(src, ["dir"]), "/mixed/", src_root=src, chown=(1234, 50))
    copy_into(root, select(src, ["f.txt"]), "/a/b/by-name.txt", src_root=src, chown=(1234, 2345))
    view = fs_view(root)
    assert view["/mixed"] == {"uid": 1234, "gid": 50, "type": "dir", "mode": "0755"}
    assert (view["/mixed/inner.txt"]["uid"], view["/mixed/inner.txt"]["gid"]) == (1234, 50)
    assert (view["/a"]["uid"], view["/a/b"]["gid"], view["/a/b/by-name.txt"]["uid"]) == (1234, 2345, 1234)


def test_merge_keeps_existing_dest_dir_and_replaces_files(tmp_path: Path) -> None:  # 051
    src = _ctx(tmp_path, {"merge/replace.txt": "replaced\n", "merge/new.txt": "new\n", "merge/keep/added.txt": "added\n"})
    root = _root(tmp_path)
    existing = root / "existing"
    (existing / "keep").mkdir(parents=True)
    existing.chmod(0o700)
    os.chown(existing, 5, 5)
    (existing / "old.txt").write_text("old\n")
    (existing / "replace.txt").write_text("old\n")
    copy_into(root, select(src, ["merge/"]), "/existing/", src_root=src)
    view = fs_view(root)
    assert view["/existing"] == {"uid": 5, "gid": 5, "type": "dir", "mode": "0700"}
    assert (existing / "replace.txt").read_text() == "replaced\n"
    assert (existing / "old.txt").read_text() == "old\n"
    assert view["/existing/keep/added.txt"]["mode"] == "0644"


def _make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def test_add_tar_merges_into_existing(tmp_path: Path) -> None:  # 059
    src = _ctx(tmp_path, {})
    _make_tar(src.path / "app.tar", [
        (_info("app", tarfile.DIRTYPE, 0o755), None),
        (_info("app/new.txt"), b"added\n"),
        (_info("app/replace.txt"), b"new\n"),
    ])
    root = _root(tmp_path)
    (root / "opt/app").mkdir(parents=True)
    (root / "opt/app/keep.txt").write_text("keep\n")
    (root / "opt/app/replace.txt").write_text("old\n")
    (root / "opt/app").chmod(0o700)
    copy_into(root, select(src, ["app.tar"]), "/opt/", src_root=src, is_add=True)
    view = fs_view(root)
    assert view["/opt/app"]["mode"] == "0755"
    assert (root / "opt/app/replace.txt").read_text() == "new\n"
    assert sorted(p for p in view if p.startswith("/opt/app/")) == [
        "/opt/app/keep.txt", "/opt/app/new.txt", "/opt/app/replace.txt"]


@pytest.mark.parametrize("compress", ["", "gzip", "bzip2", "xz", "zstd"])
def test_add_detects_compression_by_magic(tmp_path: Path, compress: str) -> None:
    src = _ctx(tmp_path, {})
    plain = tmp_path / "a.tar"
    _make_tar(plain, [(_info("x.txt", uid=7, gid=8), b"x\n")])
    target = src.path / "archive.bin"  # the name says nothing
    if compress == "zstd":
        import zstandard
        target.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    elif compress:
        subprocess.run(f"{compress} -c {plain} > {target}", shell=True, check=True)
    else:
        shutil.copy(plain, target)
    root = _root(tmp_path)
    copy_into(root, select(src, ["archive.bin"]), "/out", src_root=src, is_add=True)
    assert fs_view(root)["/out/x.txt"]["uid"] == 7
    assert (root / "out/x.txt").read_text() == "x\n"


def test_add_root_entry_keeps_dest_and_chown_overrides(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {})
    _make_tar(src.path / "a.tar", [
        (_info("./", tarfile.DIRTYPE, 0o700, uid=9, gid=9), None),
        (_info("./f", uid=9, gid=9), b"f"),
    ])
    root = _root(tmp_path)
    (root / "dest").mkdir(mode=0o751)
    copy_into(root, select(src, ["a.tar"]), "/dest", src_root=src, is_add=True, chown=(3, 4))
    view = fs_view(root)
    assert view["/dest"] == {"uid": 0, "gid": 0, "type": "dir", "mode": "0751"}
    assert (view["/dest/f"]["uid"], view["/dest/f"]["gid"]) == (3, 4)


def test_copy_does_not_extract_and_add_copies_non_archives(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {"notes.tar": "not really a tar\n", "empty.gz": b""})
    _make_tar(src.path / "real.tar", [(_info("x"), b"x")])
    root = _root(tmp_path)
    copy_into(root, select(src, ["real.tar"]), "/c/", src_root=src)
    copy_into(root, select(src, ["notes.tar", "empty.gz"]), "/a/", src_root=src, is_add=True)
    assert sorted(os.listdir(root / "c")) == ["real.tar"]
    assert sorted(os.listdir(root / "a")) == ["empty.gz", "notes.tar"]


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/../../evil"])
def test_add_clamps_escaping_names_at_the_destination(tmp_path: Path, name: str) -> None:
    # Docker extracts chrooted into the destination: ".." stops there (recorded: 902)
    src = _ctx(tmp_path, {})
    _make_tar(src.path / "evil.tar", [(_info(name), b"x")])
    root = _root(tmp_path)
    copy_into(root, select(src, ["evil.tar"]), "/x/", src_root=src, is_add=True)
    assert (root / "x/evil").read_bytes() == b"x"
    assert not (tmp_path / "evil").exists() and not (root / "evil").exists()


def test_directory_onto_a_file_is_refused_in_buildkits_words(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {"d/x": "x"})
    root = _root(tmp_path)
    (root / "file").write_text("f")
    with pytest.raises(BuildError, match="cannot copy to non-directory: /file"):
        copy_into(root, select(src, ["d"]), "/file", src_root=src)


def test_add_hard_link_out_of_the_destination_stays_inside(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {})
    _make_tar(src.path / "evil.tar", [(_info("h", tarfile.LNKTYPE, linkname="../../etc/passwd"), None)])
    root = _root(tmp_path)
    with pytest.raises(BuildError, match="No such file"):  # the clamped target /x/etc/passwd is missing
        copy_into(root, select(src, ["evil.tar"]), "/x/", src_root=src, is_add=True)
    assert not (root / "x/h").exists()


def test_add_symlink_tricks_stay_inside(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {})
    outside = tmp_path / "outside"
    outside.mkdir()
    _make_tar(src.path / "trick.tar", [
        (_info("up", tarfile.SYMTYPE, linkname="../../../../" + str(outside)), None),
        (_info("up/pwned"), b"x"),
        (_info("abs", tarfile.SYMTYPE, linkname=str(outside)), None),
        (_info("abs/pwned2"), b"x"),
    ])
    root = _root(tmp_path)
    copy_into(root, select(src, ["trick.tar"]), "/x/", src_root=src, is_add=True)
    assert os.listdir(outside) == []
    assert (root / "x" / str(outside).lstrip("/") / "pwned2").exists()


def test_dest_symlink_in_image_is_followed_inside_root(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {"f.txt": "f\n"})
    root = _root(tmp_path)
    outside = tmp_path / "host-dir"
    outside.mkdir()
    (root / "link").symlink_to(outside)  # absolute: means <root>/<outside> inside the image
    copy_into(root, select(src, ["f.txt"]), "/link/", src_root=src)
    assert os.listdir(outside) == []
    assert (root / str(outside).lstrip("/") / "f.txt").read_text() == "f\n"


def test_single_file_into_existing_dir_or_onto_path(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {"f.txt": "f\n"})
    root = _root(tmp_path)
    (root / "d").mkdir()
    (root / "d-link").symlink_to("d")
    copy_into(root, select(src, ["f.txt"]), "/d", src_root=src)
    copy_into(root, select(src, ["f.txt"]), "/d-link", src_root=src)
    copy_into(root, select(src, ["f.txt"]), "renamed", src_root=src, workdir="/w")
    assert (root / "d/f.txt").is_file() and (root / "w/renamed").is_file()
    assert (root / "d-link").is_symlink()


def test_multiple_sources_need_directory_dest(tmp_path: Path) -> None:  # 096
    src = _ctx(tmp_path, {"a.txt": "a", "b.txt": "b"})
    root = _root(tmp_path)
    with pytest.raises(BuildError, match="must be a directory"):
        copy_into(root, select(src, ["a.txt", "b.txt"]), "/notdir", src_root=src)
    with pytest.raises(BuildError, match="When using ADD"):
        copy_into(root, select(src, ["*.txt"]), "/notdir", src_root=src, is_add=True)
    (root / "isdir").mkdir()
    copy_into(root, select(src, ["a.txt", "b.txt"]), "/isdir", src_root=src)
    assert sorted(os.listdir(root / "isdir")) == ["a.txt", "b.txt"]


def test_file_onto_directory_is_an_error(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {"d/x": "file-not-dir"})
    root = _root(tmp_path)
    (root / "out/x").mkdir(parents=True)
    with pytest.raises(BuildError, match="cannot replace directory"):
        copy_into(root, select(src, ["d"]), "/out", src_root=src)


def test_chmod_and_stage_owners(tmp_path: Path) -> None:  # 074
    stage = tmp_path / "stage"
    (stage / "out/sub").mkdir(parents=True)
    (stage / "out/app.txt").write_text("artifact\n")
    (stage / "out/sub/x.log").write_text("x\n")
    for path in (stage / "out", stage / "out/app.txt", stage / "out/sub", stage / "out/sub/x.log"):
        os.chown(path, 100, 200)
    (stage / "out/app.txt").chmod(0o640)
    src = SourceRoot.stage(stage)
    root = _root(tmp_path)
    copy_into(root, select(src, ["/out"]), "/copied", src_root=src)
    copy_into(root, select(src, ["/out/"]), "/chowned/", src_root=src, chown=(7, 8))
    copy_into(root, select(src, ["/out/*.txt"]), "/modes/", src_root=src, chmod=0o4700)
    view = fs_view(root)
    assert (view["/copied"]["uid"], view["/copied/sub"]["uid"], view["/copied/app.txt"]["gid"]) == (0, 100, 200)
    assert view["/copied/app.txt"]["mode"] == "0640"
    assert {(v["uid"], v["gid"]) for k, v in view.items() if k.startswith("/chowned")} == {(7, 8)}
    assert view["/modes/app.txt"]["mode"] == "4700"


def test_symlinks_and_special_files(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {"tree/f": "f"})
    (src.path / "tree/rel").symlink_to("f")
    (src.path / "tree/abs").symlink_to("/etc/passwd")
    os.mkfifo(src.path / "tree/pipe")
    root = _root(tmp_path)
    copy_into(root, select(src, ["tree"]), "/t", src_root=src)
    assert os.readlink(root / "t/rel") == "f" and os.readlink(root / "t/abs") == "/etc/passwd"
    # BuildKit never transfers a named pipe of the build context; one in a stage is copied
    assert not os.path.lexists(root / "t/pipe")
    assert select(src, ["tree/p*"]) == []
    with pytest.raises(ContextError, match="not found"):
        select(src, ["tree/pipe"])
    stage = SourceRoot.stage(src.path)
    copy_into(root, select(stage, ["tree"]), "/s", src_root=stage)
    assert stat.S_ISFIFO(os.lstat(root / "s/pipe").st_mode)


def test_mtimes_preserved(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {"d/f": "f"})
    os.utime(src.path / "d/f", ns=(1_000_000_000, 2_000_000_000))
    os.utime(src.path / "d", ns=(1_000_000_000, 3_000_000_000))
    root = _root(tmp_path)
    copy_into(root, select(src, ["."]), "/c", src_root=src)
    assert os.lstat(root / "c/d/f").st_mtime_ns == 2_000_000_000
    assert os.lstat(root / "c/d").st_mtime_ns == 3_000_000_000


def test_heredoc_sources(tmp_path: Path) -> None:  # 106
    root = _root(tmp_path)
    copy_into(root, [Inline("EOF", b"key=value\n")], "/etc/app.conf")
    copy_into(root, [Inline("EOF", b"x")], "/scripts/", chmod=0o755, chown=(1, 2))
    view = fs_view(root)
    assert (root / "etc/app.conf").read_bytes() == b"key=value\n"
    assert view["/etc/app.conf"]["mode"] == "0644"
    assert (view["/scripts/EOF"]["mode"], view["/scripts/EOF"]["uid"]) == ("0755", 1)


def test_empty_wildcard_writes_nothing(tmp_path: Path) -> None:
    src = _ctx(tmp_path, {"a.txt": "a"})
    root = _root(tmp_path)
    copy_into(root, select(src, ["nomatch*"]), "/w/", src_root=src)
    assert os.listdir(root) == []


@pytest.mark.parametrize("data", [b"", b"\x1f\x8b not gzip", b"\x28\xb5\x2f\xfd not zstd", b"BZh9 x", b"plain text"])
def test_open_tar_rejects_garbage(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "g").write_bytes(data)
    with open_tar(tmp_path / "g") as tar:
        assert tar is None


def test_parents_recreate_source_dirs_under_dest(tmp_path: Path) -> None:  # the reference's --parents example
    src = _ctx(tmp_path, {"x/a.txt": "xa", "y/a.txt": "ya", "x/y/b.txt": "b"})
    os.chmod(src.path / "x", 0o750)
    root = _root(tmp_path)
    copy_into(root, select(src, ["./x/a.txt", "./y/a.txt"]), "/no_parents/", src_root=src)
    copy_into(root, select(src, ["./x/a.txt", "./y/a.txt"], parents=True), "/parents/", src_root=src)
    copy_into(root, select(src, ["./x/./y/*.txt"], parents=True), "/pivot", src_root=src)
    view = fs_view(root)
    assert sorted(k for k in view if k.startswith("/no_parents/")) == ["/no_parents/a.txt"]
    assert (root / "parents/x/a.txt").read_text() == "xa" and (root / "parents/y/a.txt").read_text() == "ya"
    assert view["/parents/x"]["mode"] == "0750"  # parent dirs take the source's metadata, as in fsutil
    assert sorted(k for k in view if k.startswith("/pivot")) == ["/pivot", "/pivot/y", "/pivot/y/b.txt"]


def test_exclude_with_copy_into(tmp_path: Path) -> None:  # COPY --exclude=*.txt hom* /mydir/
    src = _ctx(tmp_path, {"home.txt": "t", "home.md": "m", "homework/q.txt": "q", "homework/r.md": "r"})
    root = _root(tmp_path)
    copy_into(root, select(src, ["hom*"], excludes=["*.txt"]), "/mydir/", src_root=src)
    assert sorted(k for k in fs_view(root) if k.startswith("/mydir/")) == ["/mydir/home.md", "/mydir/r.md"]


def test_remote_file_is_0600_named_after_the_url_and_never_extracted(tmp_path: Path) -> None:
    archive = tmp_path / "download"
    _make_tar(archive, [(_info("inside.txt", size=2), b"hi")])
    fetched = Remote("http://h/a/b.tar", "b.tar", archive, "sha256:" + "0" * 64, mtime=1_000_000.0)
    root = _root(tmp_path)
    copy_into(root, [fetched], "/dl/", is_add=True)
    copy_into(root, [fetched], "/named", is_add=True, chown=(3, 4))
    copy_into(root, [fetched], "/modes/", is_add=True, chmod=0o755)
    view = fs_view(root)
    assert view["/dl/b.tar"]["mode"] == "0600" and (root / "dl/b.tar").read_bytes() == archive.read_bytes()
    assert os.lstat(root / "dl/b.tar").st_mtime == 1_000_000.0
    assert (view["/named"]["uid"], view["/named"]["gid"], view["/named"]["type"]) == (3, 4, "file")
    assert view["/modes/b.tar"]["mode"] == "0755"


@pytest.mark.parametrize(("spec", "expected"), [("0", "0"), ("1000:50", "1000:50"), ("root", "0"),
                                                ("root:root", "0:0"), ("7:root", "7:0")])
def test_link_chown_takes_numbers_and_root(spec: str, expected: str) -> None:
    assert link_chown(spec) == expected


@pytest.mark.parametrize("spec", ["app", "1000:staff", "nobody:0"])
def test_link_chown_refuses_names(spec: str) -> None:
    with pytest.raises(BuildError, match="with --link: use numeric ids"):
        link_chown(spec)


# --link, end to end (overlayfs and the store) ---------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlayfs, chown)")


def _build(tmp_path: Path, dockerfile: str, files: dict[str, str]) -> tuple[Store, list[object], list[object]]:
    from helpers.images import busybox_image
    from lamina import api
    from lamina.build import events
    from lamina.build.options import BuildOptions

    store = Store(tmp_path / "store")
    if not store.db.tags():
        busybox_image(store, "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    for name, content in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(content)
    (ctx / "Dockerfile").write_text(dockerfile)
    seen: list[events.Event] = []
    stored = api.build(store, BuildOptions(context=ctx, tags=("t:latest",)), listener=seen.append)
    cached = [e.number for e in seen if isinstance(e, events.StepCached)]
    return store, list(stored.image.layers), cached  # type: ignore[arg-type]


def _members(store: Store, layer: object) -> dict[str, tuple[str, int, int]]:
    from lamina.image.layerio import open_layer

    with open_layer(store.blobs.open(layer.digest)) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:  # type: ignore[attr-defined]
        return {m.name: (f"{m.mode:04o}", m.uid, m.gid) for m in tar}


@pytest.mark.integration
@needs_root
def test_link_layer_holds_only_the_copy_and_its_parents(tmp_path: Path) -> None:
    dockerfile = ("FROM busybox:test\nCOPY a.txt /etc/a.txt\nWORKDIR /srv\n"
                  "COPY --link --chmod=644 d/ /tmp/plain/\nCOPY --link --chown=7:8 d/ linked/\n")
    store, layers, _ = _build(tmp_path, dockerfile, {"a.txt": "a", "d/f.txt": "f"})
    # with --chmod BuildKit copies in place (no merge): /tmp keeps the base's mode
    assert _members(store, layers[-2])["tmp"] == ("1777", 0, 0)
    assert _members(store, layers[-1]) == {  # built over an empty root: only the copy and its parents
        "srv": ("0755", 7, 8), "srv/linked": ("0755", 7, 8), "srv/linked/f.txt": ("0644", 7, 8)}


@pytest.mark.integration
@needs_root
def test_link_layer_is_reused_when_an_earlier_step_changes(tmp_path: Path) -> None:
    dockerfile = "FROM busybox:test\nCOPY a.txt /a.txt\nCOPY --link d/ /app/\nCOPY d/ /plain/\n"
    store, first, _ = _build(tmp_path, dockerfile, {"a.txt": "one", "d/f.txt": "f"})
    _, second, cached = _build(tmp_path, dockerfile, {"a.txt": "two"})
    assert cached == [3]  # the --link step only: its layer does not depend on the one below
    assert second[-2].digest == first[-2].digest and second[-3].digest != first[-3].digest
    with pytest.raises(BuildError, match=r"Dockerfile:2: --chown=app with --link: use numeric ids"):
        _build(tmp_path, "FROM busybox:test\nCOPY --link --chown=app d/ /app/\n", {})


def test_a_large_tree_copied_on_threads_is_the_tree_copied_in_order(tmp_path: Path) -> None:
    from lamina.build import copy as copy_module

    files: dict[str, str | bytes] = {f"tree/d{i % 7}/s{i % 3}/f{i}.txt": f"content {i}\n" * (i % 5) for i in range(200)}
    src = _ctx(tmp_path, files)
    for i, name in enumerate(sorted(files)):
        path = src.path / name
        path.chmod(0o600 + (i % 3) * 0o11)
        os.utime(path, ns=(1_000_000_000 * i, 1_000_000_000 * (i + 7)))
    for i, folder in enumerate(sorted({os.path.dirname(n) for n in files})):
        os.utime(src.path / folder, ns=(5_000_000_000 + i, 6_000_000_000 + i))
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    serial.mkdir()
    parallel.mkdir()
    copy_into(parallel, select(src, ["tree"]), "/t/", src_root=src, chown=(7, 8))
    original = copy_module._PARALLEL_FROM
    copy_module._PARALLEL_FROM = 10**9
    try:
        copy_into(serial, select(src, ["tree"]), "/t/", src_root=src, chown=(7, 8))
    finally:
        copy_module._PARALLEL_FROM = original

    def details(root: Path) -> dict[str, tuple[int, ...]]:
        out = {}
        for path in sorted(root.rglob("*")):
            st = path.lstat()
            content = hash(path.read_bytes()) if path.is_file() else 0
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, content)
        return out

    made, expected = details(parallel), details(serial)
    assert made.pop("t")[:3] == expected.pop("t")[:3]  # the destination itself is made now
    assert made == expected and len(made) > 200


def test_a_file_that_cannot_be_copied_on_a_thread_fails_the_copy(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {f"many/f{i:03d}": "x" for i in range(64)}
    src = _ctx(tmp_path, files)
    root = _root(tmp_path)
    (root / "dest" / "f050").mkdir(parents=True)  # a directory where a file must go
    with pytest.raises(BuildError, match="cannot replace directory f050"):
        copy_into(root, select(src, ["many"]), "/dest/", src_root=src)
