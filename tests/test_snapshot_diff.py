"""Upper dir → layer tar: whiteouts, opaque dirs, hard links, determinism, runtime stubs.

The scenario tests run every step through both snapshotters and expect the
very same tar entries from each.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from lamina.errors import LayerError
from lamina.snapshot import (
    CopySnapshotter,
    LayerEntry,
    OverlaySnapshotter,
    Snapshotter,
    available,
    prune_runtime_stubs,
    read_layer_entries,
    write_layer,
    write_layer_from_dir,
)

ROOT = os.geteuid() == 0
OVERLAY = ROOT and available(Path(tempfile.gettempdir()))
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (mknod, chown, trusted xattrs)")

SNAPSHOTTERS = [
    pytest.param(
        OverlaySnapshotter,
        id="overlayfs",
        marks=[
            pytest.mark.integration,
            pytest.mark.skipif(not OVERLAY, reason="needs root and a working overlay mount"),
        ],
    ),
    pytest.param(CopySnapshotter, id="native", marks=needs_root),
]


def layer(upper: Path, lowers: list[Path], clamp: int | None = None) -> bytes:
    buf = io.BytesIO()
    write_layer(upper, lowers, buf, clamp_mtime=clamp)
    return buf.getvalue()


def entries(data: bytes) -> list[LayerEntry]:
    return read_layer_entries(io.BytesIO(data))


def d(path: str, mode: int = 0o755, uid: int = 0) -> LayerEntry:
    return LayerEntry(path, "dir", mode, uid, uid, 0, "")


def f(path: str, size: int = 0, mode: int = 0o644, uid: int = 0) -> LayerEntry:
    return LayerEntry(path, "file", mode, uid, uid, size, "")


def wh(path: str) -> LayerEntry:
    return LayerEntry(path, "file", 0, 0, 0, 0, "")


def build_lower(root: Path) -> Path:
    for directory in ("bin", "etc", "olddir", "redo", "src/sub", "keep"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    files = {
        "bin/tool": "tool",
        "etc/conf": "conf",
        "etc/mode": "m",
        "etc/owner": "o",
        "etc/gone": "g",
        "etc/xattr": "x",
        "olddir/a": "a",
        "redo/old": "old",
        "src/sub/f": "f",
        "keep/k": "k",
    }
    for name, text in files.items():
        (root / name).write_text(text)
        os.chmod(root / name, 0o644)
    for directory in ("bin", "etc", "olddir", "redo", "src", "src/sub", "keep"):
        os.chmod(root / directory, 0o755)
    return root


def change(root: Path) -> None:
    (root / "new.txt").write_text("new")
    (root / "etc/conf").write_text("changed!")
    os.chmod(root / "etc/mode", 0o600)
    os.chown(root / "etc/owner", 1000, 1000)
    os.unlink(root / "etc/gone")
    shutil.rmtree(root / "olddir")
    shutil.rmtree(root / "redo")
    (root / "redo").mkdir(mode=0o755)
    (root / "redo/new").write_text("")
    subprocess.run(["mv", str(root / "src"), str(root / "dst")], check=True)  # EXDEV fallback on overlay
    (root / "links").mkdir(mode=0o755)
    (root / "links/one").write_text("L")
    os.link(root / "links/one", root / "links/two")
    os.mkfifo(root / "fifo", 0o644)
    os.setxattr(root / "etc/xattr", "user.foo", b"bar")


EXPECTED = [
    d("dst"),
    d("dst/sub"),
    f("dst/sub/f", 1),
    d("etc"),
    f("etc/conf", 8),
    wh("etc/.wh.gone"),
    f("etc/mode", 1, mode=0o600),
    f("etc/owner", 1, uid=1000),
    f("etc/xattr", 1),
    LayerEntry("fifo", "fifo", 0o644, 0, 0, 0, ""),
    d("links"),
    f("links/one", 1),
    LayerEntry("links/two", "hardlink", 0o644, 0, 0, 0, "links/one"),
    f("new.txt", 3),
    wh(".wh.olddir"),
    d("redo"),
    wh("redo/.wh..wh..opq"),
    f("redo/new"),
    wh(".wh.src"),
]


@pytest.fixture(autouse=True)
def _umask() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("make", SNAPSHOTTERS)
def test_step_changes_become_exact_tar_entries(make: type[Snapshotter], tmp_path: Path) -> None:
    lower = build_lower(tmp_path / "lower")
    snapshotter = make()
    with snapshotter.prepare([lower], tmp_path / "work") as mount:
        change(mount.root)
    try:
        first = layer(mount.upper, [lower])
        second = layer(mount.upper, [lower])
    finally:
        mount.discard()
    assert entries(first) == EXPECTED
    assert first == second
    assert b"trusted.overlay" not in first
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        xattr = archive.getmember("etc/xattr")
        assert xattr.pax_headers == {"SCHILY.xattr.user.foo": "bar"}
        for member in archive.getmembers():
            assert member.uname == member.gname == ""
            assert not {"atime", "ctime", "mtime"} & set(member.pax_headers)
    assert (lower / "etc/gone").exists() and (lower / "src/sub/f").exists()  # lowers untouched
    assert sorted(os.listdir(tmp_path / "work")) == []


@pytest.mark.parametrize("make", SNAPSHOTTERS)
def test_runtime_stubs_leave_an_empty_layer(make: type[Snapshotter], tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/passwd").write_text("root")
    with make().prepare([lower], tmp_path / "work") as mount:
        for stub in ("dev", "proc", "sys", "run"):
            (mount.root / stub).mkdir()
        for stub in ("etc/hosts", "etc/hostname", "etc/resolv.conf"):
            (mount.root / stub).touch()
    try:
        removed = prune_runtime_stubs(mount.upper, [lower])
        assert entries(layer(mount.upper, [lower])) == []
    finally:
        mount.discard()
    assert set(removed) == {
        "dev",
        "proc",
        "sys",
        "run",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "etc",
    }


@needs_root
def test_prune_keeps_real_content(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "run").mkdir()
    (lower / "etc/hostname").touch()
    (upper / "dev").mkdir(parents=True)
    (upper / "dev/null").touch()  # not empty: a step wrote there
    (upper / "run").mkdir()  # exists below: a real (if empty) copy-up
    (upper / "etc").mkdir()
    os.chmod(upper / "etc", 0o700)  # chmod'ed in the step
    (upper / "etc/hosts").write_text("127.0.0.1 x")  # not empty
    (upper / "etc/hostname").touch()  # exists below
    (upper / "proc").touch()  # a file, not a mountpoint dir
    assert prune_runtime_stubs(upper, [lower]) == ()
    assert sorted(os.listdir(upper)) == ["dev", "etc", "proc", "run"]


def test_empty_unchanged_copy_ups_are_left_out(tmp_path: Path) -> None:
    """A parent copied up for a mount point and left as it was is no change (BuildKit's differ agrees)."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for name in ("root", "home", "srv", "var/lib"):
        (lower / name).mkdir(parents=True, mode=0o755)
    for name in ("root", "home", "srv", "var/lib", "new"):
        (upper / name).mkdir(parents=True, mode=0o755)
    os.chmod(upper / "home", 0o700)           # changed mode: kept
    (upper / "srv/file").touch()              # not empty: kept
    assert [e.path for e in entries(layer(upper, [lower]))] == ["home", "new", "srv", "srv/file"]


@needs_root
def test_markers_that_hide_nothing_are_left_out(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "dir").mkdir(parents=True)
    (lower / "dir/old").touch()
    (lower / "file").touch()
    upper.mkdir()
    for name in ("dir", "file", "never"):
        os.mknod(upper / name, stat.S_IFCHR, 0)
    for name in ("fresh", "dir2"):
        (upper / name).mkdir(mode=0o755)
        os.setxattr(upper / name, "trusted.overlay.opaque", b"y")
    os.mknod(upper / "fresh/ghost", stat.S_IFCHR, 0)
    os.makedirs(lower / "dir2")
    assert [e.path for e in entries(layer(upper, [lower]))] == [
        ".wh.dir",
        "dir2",
        "dir2/.wh..wh..opq",
        ".wh.file",
        "fresh",
    ]


@needs_root
def test_lower_lookup_follows_overlay_rules(tmp_path: Path) -> None:
    bottom, top, upper = tmp_path / "bottom", tmp_path / "top", tmp_path / "upper"
    for name in ("a/x", "b/x", "c/x", "e/x"):
        (bottom / name).parent.mkdir(parents=True, exist_ok=True)
        (bottom / name).touch()
    top.mkdir()
    (top / "a").mkdir()
    os.setxattr(top / "a", "trusted.overlay.opaque", b"y")  # hides bottom's a/x
    os.mknod(top / "b", stat.S_IFCHR, 0)  # deletes bottom's b
    (top / "c").write_text("file now")  # c is no directory any more
    (top / "e").symlink_to("/")  # never followed
    for name in ("a", "b", "c", "e"):
        (upper / name).mkdir(parents=True)
        os.mknod(upper / name / "x", stat.S_IFCHR, 0)
    assert [e.path for e in entries(layer(upper, [top, bottom]))] == ["a", "b", "c", "e"]


@needs_root
def test_write_layer_from_dir_writes_everything_as_is(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/a").write_text("aaa")
    os.link(root / "usr/bin/a", root / "usr/bin/b")
    (root / "usr/lib").symlink_to("bin")
    os.mknod(root / "zero", stat.S_IFCHR | 0o600, 0)
    os.mknod(root / "sock", stat.S_IFSOCK | 0o600)
    os.chmod(root / "usr", 0o755)
    os.chmod(root / "usr/bin", 0o755)
    os.chmod(root / "usr/bin/a", 0o755)
    os.utime(root / "usr/bin/a", (2_000_000_000, 2_000_000_000))
    buf = io.BytesIO()
    stats = write_layer_from_dir(root, buf, clamp_mtime=1_000_000_000)
    assert entries(buf.getvalue()) == [
        d("usr"),
        d("usr/bin"),
        f("usr/bin/a", 3, mode=0o755),
        LayerEntry("usr/bin/b", "hardlink", 0o755, 0, 0, 0, "usr/bin/a"),
        LayerEntry("usr/lib", "symlink", 0o777, 0, 0, 0, "bin"),
        LayerEntry("zero", "char", 0o600, 0, 0, 0, ""),
    ]
    assert (stats.entries, stats.whiteouts, stats.content_bytes) == (6, 0, 3 + len("bin"))  # docker counts symlinks
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as archive:
        assert {m.mtime for m in archive.getmembers()} == {1_000_000_000}
    raw = buf.getvalue()
    assert b"usr/\0" in raw and b"usr/bin/\0" in raw  # directories as name/
    assert len(raw) % 10240 == 0


def test_unpacked_layer_round_trips(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("needs root")
    from lamina.snapshot import unpack_layer

    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/file").write_text("content")
    (root / "a/link").symlink_to("b/file")
    for path in (root / "a", root / "a/b"):
        os.chmod(path, 0o755)
    os.chmod(root / "a/b/file", 0o640)
    first = io.BytesIO()
    write_layer_from_dir(root, first)
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack_layer(io.BytesIO(first.getvalue()), dest)
    second = io.BytesIO()
    write_layer_from_dir(dest, second)
    assert first.getvalue() == second.getvalue()


def test_read_layer_entries_rejects_garbage() -> None:
    with pytest.raises(LayerError):
        read_layer_entries(io.BytesIO(b"not a tar at all" * 64))


def test_write_layer_streams_into_a_layer_sink(tmp_path: Path) -> None:
    from lamina.image.layerio import LayerSink
    from lamina.oci.digest import Digest

    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_text("content")
    plain, compressed = io.BytesIO(), io.BytesIO()
    write_layer(upper, [], plain)
    sink = LayerSink(compressed, "gzip")
    write_layer(upper, [], sink)
    sink.close()
    assert sink.diff_id == Digest.of(plain.getvalue())
    assert compressed.getvalue()[:2] == b"\x1f\x8b"


def test_layer_bytes_are_pinned(tmp_path: Path) -> None:
    """The tar goes through tarfile's plain mode with 1 MiB copies (not its stream mode): same bytes."""
    if os.geteuid() != 0:
        pytest.skip("owners are part of the bytes: run as root")
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d/big").write_bytes(bytes(range(256)) * 9000)  # 2.3 MB: several copy buffers
    (root / "d/small").write_text("x")
    os.symlink("big", root / "d/link")
    os.link(root / "d/big", root / "d/hard")
    (root / ("long-" + "n" * 120)).write_text("long name")  # a PAX path header
    for path in sorted(root.rglob("*"), reverse=True):
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    buf = io.BytesIO()
    write_layer_from_dir(root, buf)
    assert len(buf.getvalue()) == 2314240
    assert hashlib.sha256(buf.getvalue()).hexdigest() == (
        "7ebb0787f0e049d5fdb674678570a27277745528e294871b26256ef34c07ea9a")


def _pinned_upper(tmp_path: Path) -> tuple[Path, list[Path]]:
    """An upper dir over one lower with every kind of entry the writer emits, times fixed."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for rel in ("gone", "dir/old", "opq/hidden", "keep/x"):
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_text(rel)
    (upper / "opq").mkdir(parents=True)
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    (upper / "opq/new").write_text("new")
    (upper / "dir").mkdir()
    os.mknod(upper / "dir/old", stat.S_IFCHR, 0)
    os.mknod(upper / "gone", stat.S_IFCHR, 0)
    os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(upper / "fifo", 0o600)
    (upper / "x.bin").write_bytes(bytes(range(256)) * 300 + b"tail")  # not a multiple of 512
    os.setxattr(upper / "x.bin", "user.note", b"caf\xc3\xa9")
    os.setxattr(upper / "x.bin", "security.capability", b"\x01\x00\x00\x02" + b"\x00" * 16)
    os.symlink("x.bin", upper / "link")
    os.link(upper / "x.bin", upper / "hard")
    (upper / os.fsdecode(b"bad-\xff-name")).write_text("latin")
    (upper / "empty").write_bytes(b"")
    for i in range(40):
        (upper / f"many/{i:03d}").parent.mkdir(exist_ok=True)
        (upper / f"many/{i:03d}").write_text("x" * i)
    os.chown(upper / "many/007", 1000, 1000)
    for path in sorted(upper.rglob("*"), reverse=True):
        if not path.is_symlink() and not stat.S_ISCHR(path.lstat().st_mode):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    return upper, [lower]


@needs_root
def test_upper_layer_bytes_and_blob_are_pinned(tmp_path: Path) -> None:
    """Whiteouts, opaque dirs, xattrs, devices, a non-UTF-8 name, hard links: fixed tar and gzip bytes."""
    from lamina.image.layerio import LayerSink

    upper, lowers = _pinned_upper(tmp_path)
    plain, blob = io.BytesIO(), io.BytesIO()
    stats = write_layer(upper, lowers, plain)
    sink = LayerSink(blob, "gzip")
    write_layer(upper, lowers, sink)
    sink.close()
    assert (stats.entries, stats.whiteouts, stats.content_bytes) == (54, 3, 77597)
    assert sink.diff_id.hex == hashlib.sha256(plain.getvalue()).hexdigest()
    assert (len(plain.getvalue()), hashlib.sha256(plain.getvalue()).hexdigest()) == (
        133120, "b1c80077e3c29c56324eb1924244a27aa904e55ee7efa2aa2369412c18c7e208")
    assert hashlib.sha256(blob.getvalue()).hexdigest() == (
        "06082894acc21241afd722084768e77d4918e76440a0a986efea23daa91fc117")
