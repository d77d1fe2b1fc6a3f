"""``--runtime crun``: builds with mounts, Ctrl-C, and stale-container cleanup that spares live builds."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.cli import lamina
from helpers.images import import_busybox
from lamina.runtime import runc
from lamina.runtime.runc import cleanup_stale, hide_hybrid_cgroup2

needs_crun = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("crun"), reason="needs root and crun")


def test_hybrid_cgroup2_is_left_alone_without_controllers_or_a_private_namespace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hide_hybrid_cgroup2(tmp_path / "missing") is False
    (tmp_path / "cgroup.controllers").write_text("\n")
    assert hide_hybrid_cgroup2(tmp_path) is False
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")
    monkeypatch.setattr(runc, "in_private_mount_namespace", lambda: False)
    assert hide_hybrid_cgroup2(tmp_path) is False  # never touches the host's mounts


def test_stale_containers_are_found_through_the_bundle_when_list_hides_annotations(tmp_path: Path) -> None:
    import json

    bundle = tmp_path / "lamina-x-1"
    bundle.mkdir()
    token = runc._owner_token(os.getpid())
    (bundle / "config.json").write_text(json.dumps({"annotations": {runc.OWNER_ANNOTATION: token}}))
    live = {"id": "lamina-x", "status": "running", "bundle": str(bundle)}
    gone = {"id": "lamina-y", "status": "running", "bundle": str(tmp_path / "nowhere")}
    assert runc._stale([live, gone]) == [gone]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    import_busybox(tmp_path / "store", tmp_path)
    return tmp_path / "store"


@needs_crun
def test_build_with_crun(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "data.txt").write_text("from the context\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox:test\n"
        "RUN --mount=type=cache,target=/c echo cached >> /c/log && cat /c/log\n"
        "RUN --mount=type=bind,source=data.txt,target=/d cat /d\n"
        "RUN --network=none ls /sys/class/net && echo made > /made\n")
    out = lamina(base, "build", "--runtime", "crun", "-t", "crun:1", str(ctx)).stdout
    assert "cached\n" in out and "from the context\n" in out and "lo\n" in out
    assert lamina(base, "run", "--rm", "crun:1", "cat", "/made").stdout == "made\n"


@needs_crun
def test_ctrl_c_with_crun_and_cleanup_spares_live_containers(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo started && sleep 600\n")
    proc = subprocess.Popen([sys.executable, "-m", "lamina", "--root", str(base), "build", "--runtime", "crun",
                             str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    state = base / "crun"  # each runtime keeps its own state dir in the store
    try:
        seen = b""
        deadline = time.monotonic() + 60
        while b"started" not in seen and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                seen += os.read(proc.stdout.fileno(), 4096)  # type: ignore[union-attr]
        assert b"started" in seen
        assert cleanup_stale(state, runtime="crun") == ()  # the owner is alive: its container stays
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and stderr.decode().strip() == "Interrupted"
    listed = subprocess.run(["crun", "--root", str(state), "list", "-q"], capture_output=True, text=True)
    assert listed.stdout.strip() == ""
    assert list((base / "tmp").iterdir()) == []


@needs_crun
def test_auto_builds_and_runs_with_crun_when_installed(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo auto > /auto\n")
    lamina(base, "build", "-t", "auto:1", str(ctx))  # --runtime auto, the default
    assert lamina(base, "run", "--rm", "auto:1", "cat", "/auto").stdout == "auto\n"
    assert (base / "crun").is_dir() and not (base / "runc").exists()  # crun's state dir, none of runc's
    lamina(base, "build", "--no-cache", "--runtime", "runc", "-t", "auto:2", str(ctx))
    assert (base / "runc").is_dir()  # both live side by side; recovery looks in each


def test_an_unknown_runtime_is_one_line_and_builds_nothing(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo x > /x\n")
    before = lamina(base, "images", "-q").stdout
    failed = lamina(base, "build", "--runtime", "nosuch", "-t", "x:1", str(ctx), check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == ["Error: OCI runtime 'nosuch' not found on PATH"]
    assert lamina(base, "images", "-q").stdout == before
    assert not any((base / "mounts").glob("mnt-*"))
