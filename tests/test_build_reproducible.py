"""Reproducible builds (issue #5 item 4): with SOURCE_DATE_EPOCH the digest is a function of the inputs.

Two stores stand for two machines; the context is copied to another path, with other mtimes and
inodes. Each store builds the same Dockerfile with ``--no-cache`` as well, so nothing is reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import cli
from helpers.images import busybox_rootfs_tar

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]

EPOCH = "1700000000"
DOCKERFILE = """\
FROM busybox:test
ENV APP=/app
WORKDIR $APP
COPY src/ ./src/
RUN mkdir -p out && cat src/*.txt > out/all.txt && touch out/stamp && rm -f /etc/group && chmod 0700 out
ADD files.tar /unpacked/
LABEL version=1
CMD ["cat", "/app/out/all.txt"]
"""


def lamina(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return cli.lamina(root, *args, env=env).stdout.strip()


def _stores(tmp_path: Path) -> tuple[Path, Path]:
    """Two stores holding the same base image (as two machines that pulled it)."""
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    lamina(a, "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]', str(tarball), "busybox:test")
    lamina(a, "save", "-o", str(tmp_path / "base.tar"), "busybox:test")
    lamina(b, "load", "-i", str(tmp_path / "base.tar"))
    return a, b


def _context(path: Path) -> Path:
    (path / "src").mkdir(parents=True)
    for n in range(5):
        (path / "src" / f"{n}.txt").write_text(f"file {n}\n")
    (path / "Dockerfile").write_text(DOCKERFILE)
    inner = path / "inner"
    inner.mkdir()
    (inner / "x").write_text("x")
    subprocess.run(["tar", "-C", str(inner), "-cf", str(path / "files.tar"), "x"], check=True)
    shutil.rmtree(inner)
    return path


def _digest(root: Path, tag: str) -> tuple[str, str]:
    image_id = lamina(root, "images", "-q", "--no-trunc", tag)
    manifest = lamina(root, "images", "--digests", "--format", "{{.Digest}}", tag)
    return image_id, manifest


def test_two_machines_and_two_runs_give_the_same_digest(tmp_path: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    a, b = _stores(tmp_path)
    ctx_a = _context(tmp_path / "ctx-a")
    time.sleep(1.1)  # other mtimes for the second copy of the context
    ctx_b = _context(tmp_path / "elsewhere" / "ctx-b")

    lamina(a, "build", "-q", "-t", "app:1", str(ctx_a), env=env)
    lamina(b, "build", "-q", "-t", "app:1", str(ctx_b), env=env)
    lamina(a, "build", "-q", "--no-cache", "-t", "app:2", str(ctx_a), env=env)
    lamina(b, "build", "-q", "--no-cache", "-t", "app:2", "--timestamp", EPOCH, str(ctx_b))

    first = _digest(a, "app:1")
    assert first[0].startswith("sha256:")
    assert _digest(b, "app:1") == first
    assert _digest(a, "app:2") == first
    assert _digest(b, "app:2") == first
    created = lamina(a, "inspect", "--format", "{{.Created}}", "app:1")
    assert created.startswith("2023-11-14T22:13:20")


def test_without_an_epoch_two_runs_differ_only_in_time(tmp_path: Path) -> None:
    root, _ = _stores(tmp_path)
    ctx = _context(tmp_path / "ctx")
    lamina(root, "build", "-q", "-t", "app:1", str(ctx))
    lamina(root, "build", "-q", "--no-cache", "-t", "app:2", str(ctx))
    assert _digest(root, "app:1")[0] != _digest(root, "app:2")[0]
