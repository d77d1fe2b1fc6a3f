"""Write odd.tar: absolute and ../ names, a hard link, a symlinked dir, a whiteout-like name."""

import io
import tarfile


def add(tf: tarfile.TarFile, name: str, data: bytes = b"", **kw: object) -> None:
    ti = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(ti, k, v)
    if ti.type == tarfile.REGTYPE:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)


with tarfile.open("odd.tar", "w", format=tarfile.GNU_FORMAT) as tf:
    add(tf, "/abs.txt", b"abs\n", mode=0o644)
    add(tf, "dir", type=tarfile.DIRTYPE, mode=0o755)
    add(tf, "dir/../up.txt", b"up\n", mode=0o644)
    add(tf, "dir/f.txt", b"f\n", mode=0o600, uid=7, gid=8)
    add(tf, "dir/hard", type=tarfile.LNKTYPE, linkname="dir/f.txt")
    add(tf, "lnk", type=tarfile.SYMTYPE, linkname="dir")
    add(tf, ".wh.ghost", b"", mode=0o644)
    add(tf, "dir/sub/deep.txt", b"deep\n", mode=0o640)
