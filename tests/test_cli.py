"""The lamina command as a user runs it: build, push to a real registry, pull, build FROM it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.cli import lamina
from helpers.images import busybox_rootfs_tar
from helpers.registry import running_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    store = tmp_path / "a"
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    lamina(store, "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]', str(tarball), "busybox:test")
    return store


def test_build_history_and_errors_are_docker_like(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo hi > /hi\nCMD [\"cat\", \"/hi\"]\n")
    out = lamina(base, "build", "-t", "app:1", str(ctx)).stdout
    assert "Step 2/3 : RUN echo hi > /hi" in out and "Successfully tagged app:1" in out
    assert " ---> Using cache" in lamina(base, "build", "-t", "app:1", str(ctx)).stdout
    history = lamina(base, "history", "app:1").stdout.splitlines()
    assert history[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "DURATION", "CACHED", "COMMENT"]
    assert len(history) == 4 and "RUN /bin/sh -c echo hi > /hi" in history[2]
    assert lamina(base, "run", "--rm", "app:1").stdout == "hi\n"
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUNN x\n")
    bad = lamina(base, "build", str(ctx), check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "Error: Dockerfile:2: unknown instruction: RUNN"
    assert "Traceback" not in bad.stderr


def test_push_pull_and_build_from_registry(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo pushed > /msg\n")
    with running_registry(tmp_path / "registry") as reg:
        name = f"{reg.host}/demo/app:v1"
        lamina(base, "build", "-t", name, str(ctx))
        pushed = lamina(base, "push", name).stdout
        assert "v1: digest: sha256:" in pushed
        fresh = tmp_path / "b"
        lamina(fresh, "pull", name)
        assert lamina(fresh, "run", name, "cat", "/msg").stdout == "pushed\n"
        (ctx / "Dockerfile").write_text(f"FROM {reg.host}/demo/app:v1\nRUN cat /msg > /again\n")
        other = tmp_path / "c"
        lamina(other, "build", "-t", "child", str(ctx))  # FROM pulls the base on demand
        assert lamina(other, "run", "child", "cat", "/again").stdout == "pushed\n"
        if shutil.which("skopeo"):
            proc = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{name}"],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr


def test_image_commands(base: Path, tmp_path: Path) -> None:
    lamina(base, "tag", "busybox:test", "example.com/team/bb:1")
    listing = lamina(base, "images").stdout.splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(line.split()[:2] == ["example.com/team/bb", "1"] for line in listing)
    image_id = lamina(base, "inspect", "-f", "{{.Id}}", "busybox:test").stdout.strip()
    assert image_id.startswith("sha256:")
    assert lamina(base, "inspect", "-f", "{{.Id}}", "example.com/team/bb:1").stdout.strip() == image_id
    # by ID with two tags: docker refuses without -f
    refused = lamina(base, "rmi", image_id[7:19], check=False)
    assert refused.returncode == 1 and "must be forced" in refused.stderr
    out = tmp_path / "bb.tar"
    lamina(base, "save", "-o", str(out), "example.com/team/bb:1")
    assert lamina(base, "rmi", "example.com/team/bb:1").stdout == "Untagged: example.com/team/bb:1\n"
    missing = lamina(base, "inspect", "example.com/team/bb:1", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no such image")
    assert lamina(base, "load", "-i", str(out)).stdout == "Loaded image: example.com/team/bb:1\n"
    removed = lamina(base, "rmi", "-f", image_id).stdout
    assert "Untagged: busybox:test" in removed and f"Deleted: {image_id}" in removed


def test_a_relative_root_works_for_steps_that_run(base: Path, tmp_path: Path) -> None:
    """``--root store`` from the store's parent: runc and overlayfs get absolute paths."""
    import sys

    ctx = tmp_path / "rel-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo hi > /hi\n")
    proc = subprocess.run([sys.executable, "-m", "lamina", "--root", base.name, "build", "-q", "-t", "rel:1",
                           ctx.name], cwd=base.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert lamina(base, "run", "--rm", "rel:1", "cat", "/hi").stdout == "hi\n"


def test_a_store_whose_database_is_garbage_is_one_line_for_every_command(tmp_path: Path) -> None:
    store = tmp_path / "broken"
    store.mkdir()
    garbage = bytes(range(256)) * 32
    (store / "lamina.db").write_bytes(garbage)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nENV A=1\n")
    for args in (("images",), ("build", "-q", str(ctx))):  # build asks its memo first: the same line
        proc = lamina(store, *args, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"Error: {store / 'lamina.db'}: file is not a database (restore it from a backup, or start a new store)"]
    assert (store / "lamina.db").read_bytes() == garbage
