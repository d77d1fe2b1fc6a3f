"""End-to-end builds through the real components: overlayfs, runc, the store."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from helpers.images import busybox_image
from lamina import api
from lamina.build import events
from lamina.build.options import BuildOptions
from lamina.errors import BuildError, DockerfileError, LaminaError
from lamina.image.layerio import open_layer
from lamina.store.store import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    busybox_image(s, "busybox:test")
    return s


def _build(store: Store, ctx: Path, dockerfile: str, **kw: object) -> tuple[object, list[events.Event]]:
    (ctx / "Dockerfile").write_text(dockerfile)
    seen: list[events.Event] = []
    stored = api.build(store, BuildOptions(context=ctx, tags=("t:latest",), **kw), listener=seen.append)  # type: ignore[arg-type]
    return stored, seen


def _layer_names(store: Store, layer: object) -> list[str]:
    with open_layer(store.blobs.open(layer.digest)) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:  # type: ignore[attr-defined]
        return [m.name for m in tar]


def test_layers_hold_only_their_changes_with_whiteouts(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    stored, _ = _build(store, ctx, "FROM busybox:test\nCOPY a.txt /a.txt\nRUN rm /etc/group && echo hi > /new\n"
                       "ENV X=1\n")
    image = stored.image  # type: ignore[attr-defined]
    assert len(image.layers) == 3
    assert [h.empty_layer for h in image.config.history] == [False, False, False, True]
    assert _layer_names(store, image.layers[1]) == ["a.txt"]
    names = _layer_names(store, image.layers[2])
    assert "etc/.wh.group" in names and "new" in names
    assert not any(n.startswith(("dev", "proc", "sys")) for n in names)


def test_rebuild_uses_cache_and_resumes_at_changed_step(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    dockerfile = "FROM busybox:test\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy\n"
    first, _ = _build(store, ctx, dockerfile)
    again, seen = _build(store, ctx, dockerfile)
    assert again.id == first.id  # type: ignore[attr-defined]
    assert sum(isinstance(e, events.StepCached) for e in seen) == 3
    (ctx / "a.txt").write_text("b")
    _, seen = _build(store, ctx, dockerfile)
    cached = [e.number for e in seen if isinstance(e, events.StepCached)]
    assert cached == [2]


def test_failed_run_keeps_earlier_steps_and_says_where(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with pytest.raises(BuildError, match=r"Dockerfile:3: RUN exit 7: returned a non-zero code: 7"):
        _build(store, ctx, "FROM busybox:test\nRUN echo ok > /ok\nRUN exit 7\n")
    _, seen = _build(store, ctx, "FROM busybox:test\nRUN echo ok > /ok\nRUN true\n")
    assert [e.number for e in seen if isinstance(e, events.StepCached)] == [2]
    assert not list((store.root / "mounts").iterdir())


def test_bad_dockerfile_is_one_located_error(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: unknown instruction: RUNN"):
        _build(store, ctx, "FROM busybox:test\nRUNN x\n")
    with pytest.raises(LaminaError, match="not found"):
        _build(store, ctx, "FROM busybox:test\nCOPY missing.txt /\n")
    with pytest.raises(LaminaError, match="nosuchimage"):
        _build(store, ctx, "FROM 127.0.0.1:1/nosuchimage\n")
    # the store is as it was: no new tag, image, temp file or mount work dir
    assert store.db.tags() == [("docker.io/library/busybox:test", store.db.tags()[0][1])]
    assert len(store.db.images()) == 1
    assert not list((store.root / "tmp").iterdir())
    mounts = store.root / "mounts"
    assert not mounts.exists() or not any(mounts.iterdir())


def test_run_image(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    _build(store, ctx, 'FROM busybox:test\nRUN echo built > /msg\nCMD ["cat", "/msg"]\n')
    out = io.BytesIO()
    assert api.run(store, "t:latest", output=out.write) == 0
    assert out.getvalue() == b"built\n"
    assert api.run(store, "t:latest", ["sh", "-c", "exit 4"]) == 4


def test_build_cleans_up_after_a_killed_process(store: Store, tmp_path: Path) -> None:
    """A work dir of a dead lamina process (pid that cannot exist) is removed at the next build."""
    stale = store.root / "mounts" / "mnt-999999999-abc"
    (stale / "upper").mkdir(parents=True)
    (stale / "upper" / "junk").write_text("left by a SIGKILL")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    _build(store, ctx, "FROM busybox:test\nRUN true\n")
    assert not stale.exists()
