"""What lamina pushes, others pull: RepoDigests like docker's, and a real dockerd pulls and runs it.

The dockerd is our own (own data root, exec root and socket, no bridge), and
talks to the loopback registry, which docker treats as insecure by default.
The dockerd test is skipped when docker/dockerd is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import cli
from helpers.dockerd import private_dockerd
from helpers.images import busybox_rootfs_tar
from helpers.registry import RunningRegistry, running_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


def lamina(root: Path, *args: str) -> str:
    return cli.lamina(root, *args).stdout


def docker_run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def pushed(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two images lamina built and pushed: Docker media types (the default) and OCI (``--oci``).

    The RUN's layer spans several gzip blocks, deflated in parallel (lamina.image.layerio)."""
    work = tmp_path_factory.mktemp("lamina")
    store = work / "store"
    tarball = work / "rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    lamina(store, "import", "-c", "ENV PATH=/bin", str(tarball), "busybox:test")
    ctx = work / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo from-lamina > /msg && rm /etc/group && seq 1 700000 > /n\n"
                                    'ENV GREETING=hi\nCMD ["sh", "-c", "cat /msg; echo $GREETING; md5sum /n; ls /etc"]\n')
    out: dict[str, object] = {"store": store}
    for flavour, flags in (("docker", ()), ("oci", ("--oci",))):
        name = f"{registry.host}/interop/{flavour}:v1"
        lamina(store, "build", "-t", name, *flags, str(ctx))
        line = lamina(store, "push", name).strip().splitlines()[-1]
        out[flavour] = (name, line.split("digest: ")[1].split()[0])
    return out


def test_repo_digests_after_push_and_pull(pushed: dict[str, object], tmp_path: Path) -> None:
    store = pushed["store"]
    assert isinstance(store, Path)
    name, digest = pushed["docker"]  # type: ignore[misc]
    repository = name.rsplit(":", 1)[0]
    oci_name, oci_digest = pushed["oci"]  # type: ignore[misc]
    # one image (one config, so one ID) pushed twice: docker lists every repository's digest
    info = json.loads(lamina(store, "inspect", name))[0]
    assert info["RepoDigests"] == [f"{repository}@{digest}", f"{oci_name.rsplit(':', 1)[0]}@{oci_digest}"]
    fresh = tmp_path / "fresh"
    lamina(fresh, "pull", name)
    assert json.loads(lamina(fresh, "inspect", name))[0]["RepoDigests"] == [f"{repository}@{digest}"]
    assert lamina(fresh, "inspect", "-f", "{{.Id}}", name) == lamina(store, "inspect", "-f", "{{.Id}}", name)


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A docker client talking to a private dockerd (helpers/dockerd.py), stopped afterwards."""
    with private_dockerd(tmp_path_factory.mktemp("dockerd")) as argv:
        yield argv


@pytest.mark.parametrize("flavour", ["docker", "oci"])
def test_dockerd_pulls_and_runs_what_lamina_pushed(docker: list[str], pushed: dict[str, object],
                                                   flavour: str) -> None:
    store = pushed["store"]
    assert isinstance(store, Path)
    name, digest = pushed[flavour]  # type: ignore[misc]
    docker_run(*docker, "pull", name)
    info = json.loads(docker_run(*docker, "image", "inspect", name))[0]
    ours = json.loads(lamina(store, "inspect", name))[0]
    assert info["Id"] == ours["Id"]
    wanted = f"{name.rsplit(':', 1)[0]}@{digest}"
    # both name the image by every repository digest known (docker: those it pulled so far)
    assert wanted in info["RepoDigests"] and set(info["RepoDigests"]) <= set(ours["RepoDigests"])
    assert info["RootFS"]["Layers"] == ours["RootFS"]["Layers"]
    output = docker_run(*docker, "run", "--rm", "--network", "none", name).split()
    assert output[:2] == ["from-lamina", "hi"] and "group" not in output and "passwd" in output
    assert output[2] == hashlib.md5(b"".join(b"%d\n" % i for i in range(1, 700001))).hexdigest()
