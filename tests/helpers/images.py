"""Base images for tests, made locally from Debian's busybox-static (no network)."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from lamina.image.image import Layer
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage

BUSYBOX = "/bin/busybox"


def busybox_rootfs_tar(extra: dict[str, bytes] | None = None) -> bytes:
    """A busybox root filesystem as a tar: /bin/busybox, applet links, /etc/passwd|group, /tmp."""
    binary = Path(shutil.which("busybox") or BUSYBOX)
    applets = ["sh", "echo", "cat", "ls", "id", "touch", "mkdir", "rm", "chmod", "chown", "mv", "cp",
               "ln", "true", "false", "test", "[", "sleep", "env", "pwd", "printf", "grep", "wc", "mkfifo",
               "stat", "uname", "hostname", "umask", "seq", "head", "tail", "sed", "find", "xargs", "dd"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "root"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", binary.read_bytes(), 0o755)
        for applet in applets:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add_file("etc/group", b"root:x:0:\n")
        for name, data in (extra or {}).items():
            add_file(name, data)
    return buf.getvalue()


def busybox_image(store: Store, name: str = "busybox:test") -> StoredImage:
    from lamina.transport.importer import import_rootfs

    return import_rootfs(store, io.BytesIO(busybox_rootfs_tar()), Reference.parse(name),
                         changes=("ENV PATH=/bin", 'CMD ["/bin/sh"]'))


def marker_layer(store: Store, marker: str, *, snapshot: bool = False) -> Layer:
    """A one-file gzip layer (the file and its content named ``marker``) in the store's blobs;
    with ``snapshot``, unpacked as its snapshot too (as a build leaves it)."""
    from lamina.image.layerio import LayerSink
    from lamina.oci import mediatype as mt
    from lamina.oci.descriptor import Descriptor

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(marker)
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker.encode()))
    with store.blobs.writer() as w:
        sink = LayerSink(w, "gzip")
        sink.write(buf.getvalue())
        sink.close()
        digest = w.commit(sync=False)
    layer = Layer(Descriptor(mt.DOCKER_LAYER_GZIP, digest, w.size), sink.diff_id)
    if snapshot:
        path = store.snapshot_path(layer.diff_id)
        path.mkdir(exist_ok=True)
        (path / marker).write_text(marker)
    return layer


def import_busybox(root: Path, work: Path, name: str = "busybox:test") -> None:
    """A busybox base image in the store at ``root``, imported by a lamina process."""
    work.mkdir(parents=True, exist_ok=True)
    tarball = work / "busybox-rootfs.tar"
    if not tarball.exists():
        tarball.write_bytes(busybox_rootfs_tar())
    from helpers.cli import lamina

    lamina(root, "import", "-c", "ENV PATH=/bin", str(tarball), name)
