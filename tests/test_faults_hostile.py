"""Hostile input end to end: layers, registries and build contexts made to escape, to hang or to lie.

Every case runs real ``lamina`` processes against a fresh store and ends
with: a clean exit or a one-line error (never a traceback or a hang), a
clean ``system check``, and a sentinel tree beside the store and the context
byte-for-byte unchanged. The tar-level corpus of
tests/test_snapshot_unpack.py checks the unpacker alone; here the same kinds
of entries arrive as an image's layer and go through a build.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.faults import Sentinel, check_clean, lamina, make_sentinel
from helpers.images import import_busybox
from helpers.registry import FakeRegistry, FakeRequest, Reply

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Sentinel]:
    made = make_sentinel(tmp_path / "sentinel")
    yield made
    made.assert_unchanged()


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, f"expected a failure: {proc.stdout}"
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


# --- hostile layers -------------------------------------------------------------------------------

Entry = tuple[tarfile.TarInfo, bytes | None]


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, **attrs: object) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    if data is not None:
        info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _layer_tar(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _add_layer(root: Path, base: str, name: str, plain: bytes | Callable[[gzip.GzipFile], None]) -> None:
    """``base`` plus one layer (a plain tar, or a writer of one) as image ``name``, put in the store directly."""
    from lamina.image.image import Layer, append_layer
    from lamina.oci import mediatype as mt
    from lamina.oci.config import History
    from lamina.oci.descriptor import Descriptor
    from lamina.oci.digest import Digest
    from lamina.oci.reference import Reference
    from lamina.store.store import Store

    store = Store(root)
    try:
        compressed = io.BytesIO()
        with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
            if callable(plain):
                plain(gz)
            else:
                gz.write(plain)
        diff_hex = _diff_id(compressed.getvalue())
        data = compressed.getvalue()
        digest = store.blobs.put(data)
        layer = Layer(Descriptor(mt.DOCKER_LAYER_GZIP, digest, len(data)), Digest("sha256", diff_hex))
        image = append_layer(store.resolve(base).image, layer, History(created_by="hostile"))
        stored = store.put_image(image)
        store.tag(Reference.parse(name), stored.manifest_digest)
    finally:
        store.close()


def _diff_id(gz: bytes) -> str:
    hasher = hashlib.sha256()
    with gzip.GzipFile(fileobj=io.BytesIO(gz)) as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _cases(s: str) -> dict[str, tuple[list[Entry], str | None]]:
    """Name → (entries, None if the build succeeds else a piece of its one-line error). ``s``: the sentinel."""
    up = "../" * 12
    return {
        "dotdot": ([_entry(f"{up}{s[1:]}/pwned", data=b"x")], "escapes"),
        "absolute-lands-inside": ([_entry(f"{s}/pwned", data=b"x")], None),
        "symlink-then-write": ([_entry("esc", tarfile.SYMTYPE, linkname=s), _entry("esc/pwned", data=b"x")],
                               "symlink"),
        "relative-symlink-then-write": ([_entry("esc", tarfile.SYMTYPE, linkname=up),
                                         _entry(f"esc{s}/pwned", data=b"x")], "symlink"),
        "hardlink-out": ([_entry("h", tarfile.LNKTYPE, linkname=f"{s}/secret")], "hard link"),
        "hardlink-dotdot": ([_entry("h", tarfile.LNKTYPE, linkname=f"{up}{s[1:]}/secret")], "escapes"),
        "whiteout-dotdot": ([_entry(".wh...")], "whiteout"),
        "whiteout-through-symlink": ([_entry("esc", tarfile.SYMTYPE, linkname=s), _entry("esc/.wh.secret")],
                                     "symlink"),
        "opaque-through-symlink": ([_entry("esc", tarfile.SYMTYPE, linkname=f"{s}/etc"),
                                    _entry("esc/.wh..wh..opq")], "symlink"),
        "devices-kept-as-entries": ([_entry("dev2", tarfile.DIRTYPE, mode=0o755),
                                     _entry("dev2/mem2", tarfile.CHRTYPE, devmajor=1, devminor=1, mode=0o666),
                                     _entry("dev2/sda9", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666),
                                     _entry("dev2/fifo", tarfile.FIFOTYPE)], None),
        "setuid-kept": ([_entry("bin/suid", data=b"#!/bin/sh\n", mode=0o4755)], None),
    }


LAYER_CASES = sorted(_cases("/s"))


@pytest.mark.parametrize("case", LAYER_CASES)
def test_hostile_layer(case: str, tmp_path: Path, sentinel: Sentinel) -> None:
    store = tmp_path / "store"
    import_busybox(store, tmp_path / "work")
    entries, error = _cases(str(sentinel.path))[case]
    _add_layer(store, "busybox:test", "hostile:1", _layer_tar(entries))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM hostile:1\nRUN ls -la / > /listing\n")
    proc = lamina(store, "build", "-q", "-t", "out:1", str(ctx), check=False, timeout=120)
    if error is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert error in _one_line_error(proc)
    if case == "devices-kept-as-entries":  # kept as entries, but a container may not use them (/dev/mem here)
        shown = lamina(store, "run", "--rm", "out:1", "sh", "-c", "ls -l /dev2; head -c 16 /dev2/mem2 | wc -c")
        assert shown.stdout.startswith("total") and "mem2" in shown.stdout and shown.stdout.endswith("\n0\n")
        assert "Operation not permitted" in shown.stderr
    if case == "setuid-kept":  # the bit stays in the image (docker keeps it too)
        assert lamina(store, "run", "--rm", "out:1", "stat", "-c", "%a", "/bin/suid").stdout == "4755\n"
    check_clean(store)


def test_gzip_bomb_stops_at_the_limit(tmp_path: Path, sentinel: Sentinel, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    import_busybox(store, tmp_path / "work")
    size = 256 << 20  # 256 MiB of zeros: a quarter of a MiB compressed

    def bomb(gz: gzip.GzipFile) -> None:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("zeros")
            info.size = size

            class Zeros(io.RawIOBase):
                def readable(self) -> bool:
                    return True

                def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
                    buf[:] = bytes(len(buf))
                    return len(buf)

            tar.addfile(info, io.BufferedReader(Zeros(), 1 << 20))

    _add_layer(store, "busybox:test", "bomb:1", bomb)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bomb:1\nRUN true\n")
    monkeypatch.setenv("LAMINA_MAX_LAYER_SIZE", str(64 << 20))
    line = _one_line_error(lamina(store, "build", "-q", str(ctx), check=False, timeout=120))
    assert "more than 67108864 bytes" in line and "LAMINA_MAX_LAYER_SIZE" in line
    assert not [p for p in (store / "snapshots").iterdir() if p.name.startswith(".tmp-")]
    check_clean(store)


def test_unpack_limit_scales_with_the_compressed_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.build.layers import unpack_limit

    monkeypatch.delenv("LAMINA_MAX_LAYER_SIZE", raising=False)
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert unpack_limit(1000, tmp_path) == min(1 << 30, free)
    assert unpack_limit(100 << 20, tmp_path) == min(200 * (100 << 20), free)
    monkeypatch.setenv("LAMINA_MAX_LAYER_SIZE", "12345")
    assert unpack_limit(100 << 20, tmp_path) == 12345


# --- hostile registries --------------------------------------------------------------------------


def _serve(config: bytes, layer: bytes, *, manifest: bytes | None = None, media_type: str | None = None,
           blobs: dict[str, bytes] | None = None) -> Callable[[FakeRequest], Reply]:
    """A registry holding one image, whose answers the caller may replace with lies."""
    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    real = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(layer),
                    "size": len(layer)}]}).encode()
    body = manifest if manifest is not None else real
    served = {digest(config): config, digest(layer): layer, **(blobs or {})}

    def handler(req: FakeRequest) -> Reply:
        if req.path == "/v2/":
            return Reply(200, b"{}")
        if "/manifests/" in req.path:
            kind = media_type or "application/vnd.oci.image.manifest.v1+json"
            return Reply(200, body, {"Content-Type": kind, "Docker-Content-Digest": digest(body)})
        name = req.path.rsplit("/", 1)[-1]
        if "/blobs/" in req.path and name in served:
            return Reply(200, served[name])
        return Reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}')
    return handler


def _image_parts() -> tuple[bytes, bytes]:
    layer_tar = _layer_tar([_entry("hello", data=b"hi\n")])
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
                         "history": [{"created_by": "test"}]}).encode()
    return config, layer


def _registry_cases() -> dict[str, tuple[Callable[[FakeRequest], Reply], str]]:
    config, layer = _image_parts()
    lying = b"not the layer" + bytes(len(layer) - 13) if len(layer) > 13 else b"x"
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    return {
        "wrong-blob-bytes": (_serve(config, layer, blobs={layer_digest: lying[: len(layer)]}), "hashes to"),
        "endless-blob": (_serve(config, layer, blobs={layer_digest: layer + bytes(8 << 20)}), "more than"),
        "malformed-manifest": (_serve(config, layer, manifest=b'{"schemaVersion": 2, "layers": [}'), "manifest"),
        "html-manifest": (_serve(config, layer, manifest=b"<html>login</html>", media_type="text/html"), ""),
        "huge-manifest": (_serve(config, layer, manifest=b"{" + b" " * (5 << 20) + b"}"), "larger than"),
        "missing-config": (_serve(b"{}", layer), ""),
    }


@pytest.mark.parametrize("case", sorted(_registry_cases()))
def test_hostile_registry(case: str, tmp_path: Path, sentinel: Sentinel) -> None:
    handler, message = _registry_cases()[case]
    store = tmp_path / "store"
    with FakeRegistry(handler) as fake:
        proc = lamina(store, "pull", f"{fake.host}/evil/image:1", check=False, timeout=120)
    line = _one_line_error(proc)
    assert message in line
    blobs = store / "blobs" / "sha256"
    for blob in blobs.iterdir() if blobs.is_dir() else ():  # nothing visible under a digest it does not match
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert lamina(store, "images", "-q").stdout.strip() == ""
    check_clean(store)


# --- hostile build contexts ---------------------------------------------------------------------------------


def _context(tmp_path: Path, sentinel: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "ok.txt").write_text("ok\n")
    os.symlink(sentinel / "secret", ctx / "abs-link")
    os.symlink("../sentinel/etc", ctx / "rel-link")
    return ctx


CONTEXT_CASES: dict[str, tuple[str, str | None]] = {
    # a symlink inside a copied directory is copied as a link, never what it points to outside the context
    "symlinks-out-are-copied-as-links": (
        "COPY . /dst/\n"
        "RUN test -L /dst/abs-link && test -L /dst/rel-link && ! test -e /dst/abs-link && ! test -e /dst/rel-link\n",
        None),
    # named as the source, it is followed as BuildKit does: inside the context root, where nothing is
    "symlink-named-as-source": ("COPY abs-link /x\n", "not found"),
    "path-through-symlink-out": ("COPY rel-link/passwd /x\n", ""),
    "dotdot-source": ("COPY ../sentinel/secret /x\n", ""),
    "dotdot-glob": ("COPY ../* /x/\n", ""),
    "whole-context-with-fifo-and-socket": ("COPY . /ctx/\nRUN test -f /ctx/ok.txt\n", None),
    "add-dotdot": ("ADD ../sentinel /x\n", ""),
}


@pytest.mark.parametrize("case", sorted(CONTEXT_CASES))
def test_hostile_context(case: str, tmp_path: Path, sentinel: Sentinel) -> None:
    store = tmp_path / "store"
    import_busybox(store, tmp_path / "work")
    body, error = CONTEXT_CASES[case]
    ctx = _context(tmp_path, sentinel.path, "FROM busybox:test\n" + body)
    os.mkfifo(ctx / "fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(ctx / "sock"))
    try:
        proc = lamina(store, "build", "-q", "-t", "ctx:1", str(ctx), check=False, timeout=120)
    finally:
        listener.close()
    if error is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert error in _one_line_error(proc)
    check_clean(store)


# --- hostile Dockerfiles ---------------------------------------------------------------------------


def test_ten_thousand_instructions_build(tmp_path: Path, sentinel: Sentinel) -> None:
    """Once quadratic (each step re-encoded the whole config and env): it must simply finish."""
    store = tmp_path / "store"
    import_busybox(store, tmp_path / "work")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    envs = "".join(f"ENV V{i}={i}\n" for i in range(9_998))
    (ctx / "Dockerfile").write_text(f'FROM busybox:test\n{envs}RUN test "$V9000" = 9000 && test "$V0" = 0\n')
    proc = lamina(store, "build", "--progress", "plain", "-t", "many:1", str(ctx), timeout=600)
    image_id = lamina(store, "inspect", "-f", "{{.Id}}", "many:1").stdout.strip()
    assert f"Successfully built {image_id[7:19]}" in proc.stdout
    assert "Step 10000/10000 : RUN" in proc.stdout
    env = json.loads(lamina(store, "inspect", "-f", "{{json .Config.Env}}", "many:1").stdout)
    assert len(env) == 9_999 and env[-1] == "V9997=9997"  # PATH from the base, then the 9,998 ENVs
    rebuilt = lamina(store, "build", "-q", "-t", "many:1", str(ctx), timeout=600)
    assert rebuilt.stdout.strip() == image_id
    check_clean(store)


HOSTILE_DOCKERFILES: dict[str, bytes] = {
    "nul-byte": b"FROM busybox:test\nRUN echo a\x00b > /x\n",
    "invalid-utf8": b"FROM busybox:test\nLABEL x=\xff\xfe\nRUN echo \xc3\x28 > /x\n",
    "megabyte-line": b"FROM busybox:test\nLABEL big=" + b"x" * 1_000_000 + b"\n",
    "unterminated-heredoc": b"FROM busybox:test\nRUN <<EOF\necho hi > /x\n",
    "unterminated-json": b'FROM busybox:test\nCMD ["a", "b"\n',
    "continuation-at-eof": b"FROM busybox:test\nRUN echo a \\",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_DOCKERFILES))
def test_hostile_dockerfile(case: str, tmp_path: Path, sentinel: Sentinel) -> None:
    """Built as Docker would, or one located line of error: never a traceback, never a hang."""
    store = tmp_path / "store"
    import_busybox(store, tmp_path / "work")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_bytes(HOSTILE_DOCKERFILES[case])
    proc = lamina(store, "build", "-q", str(ctx), check=False, timeout=120)
    if proc.returncode != 0:
        assert "Dockerfile" in _one_line_error(proc)
    check_clean(store)
