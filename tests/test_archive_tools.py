"""Independent readers of our archives: skopeo, umoci and a private dockerd (skipped when missing)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.oci.digest import Digest
from lamina.oci.reference import Reference
from lamina.store import Store, StoredImage
from lamina.transport.archive import load, save
from lamina.transport.importer import import_rootfs

pytestmark = pytest.mark.integration

FILES = {"bin/hello": b"#!/bin/sh\necho hello\n", "etc/motd": b"welcome\n"}


def rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def image(tmp_path: Path) -> tuple[Store, StoredImage]:
    store = Store(tmp_path / "store")
    stored = import_rootfs(store, io.BytesIO(rootfs()), Reference.parse("example.com/tools/hello:v1"),
                           changes=['CMD ["/bin/hello"]'])
    return store, stored


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def test_skopeo_inspects_our_oci_archive(image: tuple[Store, StoredImage], tmp_path: Path) -> None:
    skopeo = tool("skopeo")
    store, stored = image
    out = tmp_path / "oci.tar"
    save(store, ["example.com/tools/hello:v1"], out, format="oci-archive")
    info = json.loads(run(skopeo, "inspect", f"oci-archive:{out}:v1"))
    assert info["Layers"] == [str(d.digest) for d in stored.manifest.layers]
    raw = json.loads(run(skopeo, "inspect", "--config", "--raw", f"oci-archive:{out}"))
    assert raw["config"]["Cmd"] == ["/bin/hello"]


def test_skopeo_inspects_our_docker_archive(image: tuple[Store, StoredImage], tmp_path: Path) -> None:
    skopeo = tool("skopeo")
    store, stored = image
    out = tmp_path / "docker.tar"
    save(store, ["example.com/tools/hello:v1"], out)
    info = json.loads(run(skopeo, "inspect", f"docker-archive:{out}"))
    assert info["Layers"] == [str(stored.image.layers[0].diff_id)]  # skopeo names docker-archive layers by diff_id
    raw = json.loads(run(skopeo, "inspect", "--config", "--raw", f"docker-archive:{out}"))
    assert raw["rootfs"]["diff_ids"] == [str(stored.image.layers[0].diff_id)]


def test_umoci_unpacks_our_oci_archive(image: tuple[Store, StoredImage], tmp_path: Path) -> None:
    umoci = tool("umoci")
    if os.geteuid() != 0:
        pytest.skip("umoci unpack needs root (or --rootless)")
    store, _ = image
    out = tmp_path / "oci.tar"
    save(store, ["example.com/tools/hello:v1"], out, format="oci-archive")
    layout = tmp_path / "layout"
    with tarfile.open(out) as tar:
        tar.extractall(layout, filter="data")
    run(umoci, "unpack", "--image", f"{layout}:v1", str(tmp_path / "bundle"))
    for name, data in FILES.items():
        assert (tmp_path / "bundle" / "rootfs" / name).read_bytes() == data
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["process"]["args"] == ["/bin/hello"]


# -- docker load / docker save through a private dockerd --------------------------------------------

@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A docker client talking to a dockerd of our own (own data root and socket), stopped afterwards."""
    client = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
    daemon = shutil.which("dockerd")
    if client is None or daemon is None or os.geteuid() != 0:
        pytest.skip("docker/dockerd not installed, or not root")
    data = tmp_path_factory.mktemp("dockerd")
    exec_root = Path(tempfile.mkdtemp(prefix="ldk-"))  # short: containerd's socket lives under it
    sock = exec_root / "docker.sock"
    with open(data / "log", "wb") as log:
        proc = subprocess.Popen(
            [daemon, "--bridge=none", "--iptables=false", "--data-root", str(data / "root"),
             "--exec-root", str(exec_root / "exec"), "--pidfile", str(exec_root / "pid"), "-H", f"unix://{sock}"],
            stdout=log, stderr=log, start_new_session=True)
    argv = [client, "-H", f"unix://{sock}"]
    try:
        if not _wait_ready(argv, proc):
            pytest.skip("dockerd did not start: " + (data / "log").read_text()[-300:])
        yield argv
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(exec_root, ignore_errors=True)


def _wait_ready(argv: list[str], proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and proc.poll() is None:
        if subprocess.run([*argv, "info"], capture_output=True).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def test_docker_loads_our_docker_archive(docker: list[str], image: tuple[Store, StoredImage],
                                         tmp_path: Path) -> None:
    store, stored = image
    out = tmp_path / "docker.tar"
    save(store, ["example.com/tools/hello:v1"], out)
    assert "example.com/tools/hello:v1" in run(*docker, "load", "-i", str(out))
    info = json.loads(run(*docker, "image", "inspect", "example.com/tools/hello:v1"))[0]
    assert info["Id"] == str(stored.config_digest)
    assert info["RootFS"]["Layers"] == [str(stored.image.layers[0].diff_id)]
    assert info["Config"]["Cmd"] == ["/bin/hello"]


def test_we_load_what_docker_saves(docker: list[str], image: tuple[Store, StoredImage], tmp_path: Path) -> None:
    store, stored = image
    out = tmp_path / "docker.tar"
    save(store, ["example.com/tools/hello:v1"], out)
    run(*docker, "load", "-i", str(out))
    run(*docker, "tag", "example.com/tools/hello:v1", "hello:again")
    back = tmp_path / "from-docker.tar"
    run(*docker, "save", "-o", str(back), "hello:again")
    fresh = Store(tmp_path / "fresh")
    ((loaded, refs),) = load(fresh, back)
    assert loaded.config_digest == stored.config_digest
    assert refs == [Reference.parse("hello:again")]
    assert loaded.image.layers[0].diff_id == stored.image.layers[0].diff_id
    assert Digest.of(fresh.blobs.read(loaded.config_digest)) == stored.config_digest


def test_docker_runs_a_lamina_build_with_whiteouts(docker: list[str], tmp_path: Path) -> None:
    """Deleted files (whiteouts) and a replaced directory (opaque) stay gone in real Docker."""
    from helpers.images import busybox_image
    from lamina import api
    from lamina.build.options import BuildOptions

    store = Store(tmp_path / "store")
    busybox_image(store, "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox:test\n"
        "RUN mkdir -p /d/sub && echo 1 > /d/sub/old && echo x > /gone\n"
        "RUN rm /gone /etc/group && rm -rf /d && mkdir /d && echo 2 > /d/new\n")
    api.build(store, BuildOptions(context=ctx, tags=("lamina-whiteouts:1",)))
    out = tmp_path / "img.tar"
    save(store, ["lamina-whiteouts:1"], out)
    run(*docker, "load", "-i", str(out))
    listing = run(*docker, "run", "--rm", "--network", "none", "lamina-whiteouts:1",
                  "sh", "-c", "ls /d; ls /gone /etc/group /d/sub 2>&1 | wc -l")
    assert listing.split() == ["new", "3"]
