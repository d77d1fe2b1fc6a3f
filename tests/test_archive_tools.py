"""Independent readers of our archives: skopeo, umoci and a private dockerd (skipped when missing)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.dockerd import private_dockerd
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
    """A docker client talking to a private dockerd (helpers/dockerd.py), stopped afterwards."""
    with private_dockerd(tmp_path_factory.mktemp("dockerd")) as argv:
        yield argv


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
