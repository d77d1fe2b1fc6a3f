"""Unpacking layers into overlay-format snapshots: fidelity, whiteouts, and hostile tars."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from lamina.errors import DigestMismatch, LayerError
from lamina.oci.digest import Digest
from lamina.snapshot.unpack import UnpackStats, unpack_layer, unpack_to_snapshot

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted xattrs)")

Entry = tuple[tarfile.TarInfo, bytes]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def make_tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def unpack(data: bytes, dest: Path, max_bytes: int | None = None) -> UnpackStats:
    return unpack_layer(io.BytesIO(data), dest, max_bytes=max_bytes)


def tree(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Everything below ``root``: mode, owner and content (or link target)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                body = Path(path).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.fsencode(os.readlink(path))
            else:
                body = b""
            seen[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_mtime_ns, body)
    return seen


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    path = tmp_path / "sentinel"
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text("root:x:0:0\n")
    (path / "x").write_text("outside")
    return path


@needs_root
def test_unpack_keeps_types_owners_modes_times_and_xattrs(dest: Path) -> None:
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    xattrs = {
        "SCHILY.xattr.user.foo": "bar",
        "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.trusted.overlay.opaque": "y",
    }
    data = make_tar(
        entry("bin", tarfile.DIRTYPE, mtime=1_500_000_000),
        entry("bin/su", data=b"#!", mode=0o4755, uid=1000, gid=1001, pax_headers=xattrs),
        entry("bin/sh", tarfile.SYMTYPE, linkname="/bin/dash", uid=7, gid=8),
        entry("bin/su2", tarfile.LNKTYPE, linkname="bin/su"),
        entry("tmp", tarfile.DIRTYPE, mode=0o1777),
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660, gid=6),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry("/abs/file", data=b"absolute names become relative"),
        entry("./dot/file", data=b"x"),
    )
    stats = unpack(data, dest)
    assert stats == UnpackStats(entries=10, files=3, content_bytes=2 + 30 + 1, whiteouts=0)
    su = os.lstat(dest / "bin/su")
    assert (stat.S_IMODE(su.st_mode), su.st_uid, su.st_gid, su.st_nlink) == (0o4755, 1000, 1001, 2)
    assert os.getxattr(dest / "bin/su", "user.foo") == b"bar"
    assert os.getxattr(dest / "bin/su", "security.capability") == cap
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "bin/su")
    assert os.readlink(dest / "bin/sh") == "/bin/dash"
    assert (os.lstat(dest / "bin/sh").st_uid, os.lstat(dest / "bin/sh").st_gid) == (7, 8)
    assert os.lstat(dest / "bin").st_mtime == 1_500_000_000  # set after its contents
    assert os.lstat(dest / "bin/su").st_mtime == 1_600_000_000
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_ISBLK(os.lstat(dest / "dev/loop0").st_mode)
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    assert (dest / "abs/file").read_bytes() == b"absolute names become relative"
    assert (dest / "dot/file").read_bytes() == b"x"


@needs_root
def test_whiteouts_become_overlay_markers(dest: Path) -> None:
    data = make_tar(
        entry("etc", tarfile.DIRTYPE),
        entry("etc/.wh.passwd"),
        entry("opt", tarfile.DIRTYPE),
        entry("opt/.wh..wh..opq"),
        entry("opt/kept", data=b"k"),
        entry(".wh..wh.plnk", tarfile.DIRTYPE),  # aufs bookkeeping: ignored
        entry("same"),
        entry(".wh.same"),  # a whiteout never hides its own layer's entry
    )
    stats = unpack(data, dest)
    assert stats.whiteouts == 2
    marker = os.lstat(dest / "etc/passwd")
    assert stat.S_ISCHR(marker.st_mode) and marker.st_rdev == 0
    assert os.getxattr(dest / "opt", "trusted.overlay.opaque") == b"y"
    assert (dest / "opt/kept").read_bytes() == b"k"
    assert not (dest / ".wh..wh.plnk").exists()
    assert stat.S_ISREG(os.lstat(dest / "same").st_mode)
    assert sorted(os.listdir(dest)) == ["etc", "opt", "same"]


def test_later_entries_replace_earlier_ones(dest: Path) -> None:
    data = make_tar(
        entry("f", data=b"first"),
        entry("f", data=b"second"),
        entry("d", tarfile.DIRTYPE, mode=0o700),
        entry("d/child", data=b"c"),
        entry("d", tarfile.DIRTYPE, mode=0o750),  # dir over dir: merge, keep children
        entry("g", tarfile.DIRTYPE),
        entry("g/child", data=b"c"),
        entry("g", tarfile.SYMTYPE, linkname="f"),  # a symlink replaces a whole dir
    )
    unpack(data, dest)
    assert (dest / "f").read_bytes() == b"second"
    assert stat.S_IMODE(os.lstat(dest / "d").st_mode) == 0o750
    assert (dest / "d/child").read_bytes() == b"c"
    assert os.readlink(dest / "g") == "f"


HOSTILE: dict[str, tuple[tuple[Entry, ...], str]] = {
    "dotdot": ((entry("../../etc/x", data=b"pwned"),), "escapes"),
    "dotdot-middle": ((entry("a/../../x", data=b"pwned"),), "escapes"),
    "symlink-abs-parent": (
        (entry("a", tarfile.SYMTYPE, linkname="{sentinel}/etc"), entry("a/passwd", data=b"pwned")),
        "symlink",
    ),
    "symlink-rel-parent": (
        (entry("a", tarfile.SYMTYPE, linkname="../.."), entry("a/x", data=b"pwned")),
        "symlink",
    ),
    "symlink-deep-parent": (
        (
            entry("d", tarfile.DIRTYPE),
            entry("d/l", tarfile.SYMTYPE, linkname="{sentinel}"),
            entry("d/l/etc/passwd", data=b"pwned"),
        ),
        "symlink",
    ),
    "symlink-replaces-dir": (
        (
            entry("d", tarfile.DIRTYPE),
            entry("d", tarfile.SYMTYPE, linkname="{sentinel}"),
            entry("d/x", data=b"pwned"),
        ),
        "symlink",
    ),
    "symlink-then-whiteout": (
        (entry("a", tarfile.SYMTYPE, linkname="{sentinel}"), entry("a/.wh.x")),
        "symlink",
    ),
    "symlink-then-opaque": (
        (entry("a", tarfile.SYMTYPE, linkname="{sentinel}"), entry("a/.wh..wh..opq")),
        "symlink",
    ),
    "symlink-then-hardlink": (
        (
            entry("f", data=b"f"),
            entry("a", tarfile.SYMTYPE, linkname="{sentinel}"),
            entry("a/x", tarfile.LNKTYPE, linkname="f"),
        ),
        "symlink",
    ),
    "file-as-parent": ((entry("f", data=b"f"), entry("f/x", data=b"pwned")), "not a directory"),
    "kept-parent-replaced-by-symlink": (  # the unpacker keeps the last parent dir open
        (
            entry("d", tarfile.DIRTYPE),
            entry("d/a", data=b"a"),
            entry("d", tarfile.SYMTYPE, linkname="{sentinel}"),
            entry("d/x", data=b"pwned"),
        ),
        "symlink",
    ),
    "hardlink-abs": ((entry("h", tarfile.LNKTYPE, linkname="{sentinel}/etc/passwd"),), "hard link"),
    "hardlink-etc": ((entry("h", tarfile.LNKTYPE, linkname="/etc/passwd"),), "hard link"),
    "hardlink-dotdot": ((entry("h", tarfile.LNKTYPE, linkname="../x"),), "escapes"),
    "hardlink-to-symlink": (
        (entry("s", tarfile.SYMTYPE, linkname="{sentinel}/x"), entry("h", tarfile.LNKTYPE, linkname="s")),
        "hard link",
    ),
    "hardlink-to-dir": (
        (entry("d", tarfile.DIRTYPE), entry("h", tarfile.LNKTYPE, linkname="d")),
        "hard link",
    ),
    "hardlink-to-later-file": (
        (entry("h", tarfile.LNKTYPE, linkname="f"), entry("f", data=b"f")),
        "hard link",
    ),
    "hardlink-to-self": ((entry("h", data=b"h"), entry("h", tarfile.LNKTYPE, linkname="h")), "hard link"),
    "whiteout-parent": ((entry("d/.wh..."),), "whiteout"),
    "whiteout-empty": ((entry("d/.wh."),), "whiteout"),
    "root-as-file": ((entry("./", data=b"x"),), "non-directory"),
}


@needs_root
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_entries_are_rejected_and_nothing_escapes(
    case: str, tmp_path: Path, dest: Path, sentinel: Path
) -> None:
    entries, message = HOSTILE[case]
    for info, _ in entries:
        info.linkname = info.linkname.replace("{sentinel}", str(sentinel))
    before = tree(sentinel)
    with pytest.raises(LayerError, match=message):
        unpack(make_tar(*entries), dest)
    assert tree(sentinel) == before
    assert sorted(os.listdir(tmp_path)) == ["dest", "sentinel"]
    assert not os.path.exists("/etc/x") or Path("/etc/x").read_bytes() != b"pwned"


def test_device_entries_land_inside_dest(dest: Path, sentinel: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    unpack(make_tar(entry("/dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)), dest)
    assert stat.S_ISBLK(os.lstat(dest / "dev/sda").st_mode)


def test_truncated_tar_is_rejected(dest: Path) -> None:
    data = make_tar(entry("big", data=b"x" * 5000), entry("after", data=b"y"))
    for cut in (700, 5700, 6200):  # in the first file's data, in the second header, in its data
        with pytest.raises(LayerError, match="malformed|unexpected end"):
            unpack(data[:cut], _fresh(dest, cut))


def _fresh(dest: Path, n: int) -> Path:
    path = dest / f"try{n}"
    path.mkdir()
    return path


def test_garbage_header_is_rejected(dest: Path) -> None:
    data = make_tar(entry("ok", data=b"1"))
    end = data.index(b"\0" * 1024, 1024)
    corrupt = data[:end] + b"garbage!" * 64 + data[end:]
    with pytest.raises(LayerError, match="malformed"):
        unpack(corrupt, dest)


def test_empty_stream_is_rejected(dest: Path) -> None:
    with pytest.raises(LayerError):
        unpack(b"", dest)


def test_an_empty_layer_is_fine(dest: Path) -> None:
    assert unpack(make_tar(), dest) == UnpackStats(0, 0, 0, 0)


def test_max_bytes_bounds_the_content(dest: Path) -> None:
    huge = tarfile.TarInfo("huge")
    huge.size = 10**12  # the header claims a terabyte; no data follows
    buf = io.BytesIO()
    buf.write(huge.tobuf(tarfile.PAX_FORMAT))
    with pytest.raises(LayerError, match="layer too large"):
        unpack(buf.getvalue(), _fresh(dest, 1), max_bytes=10**6)
    two = make_tar(entry("a", data=b"x" * 600), entry("b", data=b"y" * 600))
    with pytest.raises(LayerError, match="layer too large"):
        unpack(two, _fresh(dest, 2), max_bytes=1000)
    assert unpack(two, _fresh(dest, 3), max_bytes=1200).content_bytes == 1200


def _diff_id(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def test_unpack_to_snapshot_is_idempotent(tmp_path: Path) -> None:
    data = make_tar(entry("f", data=b"hello"))
    calls = []

    def open_stream() -> io.BytesIO:
        calls.append(1)
        return io.BytesIO(data)

    snapshots = tmp_path / "snapshots"
    first = unpack_to_snapshot(open_stream, snapshots, _diff_id(data))
    second = unpack_to_snapshot(open_stream, snapshots, _diff_id(data))
    assert first == second == snapshots / _diff_id(data).hex
    assert (first / "f").read_bytes() == b"hello"
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o755
    assert len(calls) == 1
    assert os.listdir(snapshots) == [_diff_id(data).hex]


def test_unpack_to_snapshot_checks_the_diff_id(tmp_path: Path) -> None:
    data = make_tar(entry("f", data=b"hello"))
    wrong = _diff_id(b"something else")
    with pytest.raises(DigestMismatch):
        unpack_to_snapshot(lambda: io.BytesIO(data), tmp_path, wrong)
    assert os.listdir(tmp_path) == []


def test_unpack_to_snapshot_failure_leaves_nothing(tmp_path: Path) -> None:
    data = make_tar(entry("../x", data=b"x"))
    with pytest.raises(LayerError):
        unpack_to_snapshot(lambda: io.BytesIO(data), tmp_path, _diff_id(data))
    assert os.listdir(tmp_path) == []


def test_unpack_to_snapshot_loser_of_a_race_discards_its_copy(tmp_path: Path) -> None:
    data = make_tar(entry("f", data=b"mine"))
    target = tmp_path / _diff_id(data).hex

    def open_stream() -> io.BytesIO:
        target.mkdir()  # another process finishes first
        (target / "f").write_bytes(b"theirs")
        return io.BytesIO(data)

    assert unpack_to_snapshot(open_stream, tmp_path, _diff_id(data)) == target
    assert (target / "f").read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == [target.name]


def test_missing_parents_are_created_whatever_the_umask(dest: Path) -> None:
    old = os.umask(0o077)
    try:
        unpack(make_tar(entry("a/b/c", data=b"c")), dest)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(dest / "a").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(dest / "a/b").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(dest / "a/b/c").st_mode) == 0o644


def _open_below(root: Path) -> list[str]:
    """What this process's descriptors point to at or below ``root``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(root) or target.startswith(f"{root}/"):
            found.append(target)
    return found


def test_the_kept_parent_directory_is_closed(dest: Path) -> None:
    entries = [entry("a", tarfile.DIRTYPE), *(entry(f"a/{i}", data=b"x") for i in range(50)),
               entry("b/c/d", data=b"deep"), entry("a/late", data=b"back")]
    unpack(make_tar(*entries), dest)
    assert _open_below(dest) == []
    assert (dest / "a/late").read_bytes() == b"back" and (dest / "b/c/d").read_bytes() == b"deep"
    with pytest.raises(LayerError):
        unpack(make_tar(entry("a/x", data=b"x"), entry("a/y", tarfile.LNKTYPE, linkname="nowhere")), dest)
    assert _open_below(dest) == []
