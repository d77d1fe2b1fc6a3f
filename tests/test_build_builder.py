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
from lamina.oci.digest import Digest
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


def test_workdir_of_the_root_makes_no_layer(store: Store, tmp_path: Path) -> None:
    # BuildKit creates no directory for "/" (however it is reached), so no layer; any other WORKDIR has one
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    stored, _ = _build(store, ctx, "FROM busybox:test\nWORKDIR /\nWORKDIR /tmp\nWORKDIR ..\nWORKDIR /x/y/\n")
    image = stored.image  # type: ignore[attr-defined]
    assert [h.empty_layer for h in image.config.history][-4:] == [True, False, True, False]
    assert image.config.config.working_dir == "/x/y/"  # an absolute WORKDIR is kept as written


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


# parallel stages ------------------------------------------------------------------------------
# /proc/uptime: a clock every container shares (busybox's date has no sub-second %N)
_TIMED_RUN = "RUN read t _ < /proc/uptime && echo $t > /start && sleep 2 && read t _ < /proc/uptime && echo $t > /end"


def _file_in_layers(store: Store, image: object, name: str) -> bytes:
    for layer in reversed(image.layers):  # type: ignore[attr-defined]
        with open_layer(store.blobs.open(layer.digest)) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                if member.name == name:
                    data = tar.extractfile(member)
                    assert data is not None
                    return data.read()
    raise AssertionError(f"{name} not in the image")


def _blocks(seen: list[events.Event]) -> list[str]:
    """Stage labels of the step events, with repeats in a row folded: one entry per block."""
    labels = [e.stage for e in seen if isinstance(e, events.StepStarted | events.StepDone | events.StepCached)]
    return [label for i, label in enumerate(labels) if i == 0 or labels[i - 1] != label]


def test_independent_stages_run_at_the_same_time(store: Store, tmp_path: Path) -> None:
    """Each stage's RUN records when it started and ended (uptime, shared by the host): they overlap."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile = (f"FROM busybox:test AS a\n{_TIMED_RUN} # a\nFROM busybox:test AS b\n{_TIMED_RUN} # b\n"
                  "FROM busybox:test\nCOPY --from=a /start /end /a/\nCOPY --from=b /start /end /b/\n")
    stored, seen = _build(store, ctx, dockerfile)
    image = stored.image  # type: ignore[attr-defined]
    times = {f"{s}{n}": float(_file_in_layers(store, image, f"{s}/{n}")) for s in "ab" for n in ("start", "end")}
    assert times["astart"] < times["bend"] and times["bstart"] < times["aend"], times
    # the renderer still sees one stage at a time, in a readable order
    assert _blocks(seen) == ["a", "b", "2"]
    assert [e.number for e in seen if isinstance(e, events.StepStarted)] == [1, 2, 3, 4, 5, 6, 7]
    assert not any(Path(store.root / "mounts").iterdir())

    again, seen = _build(store, ctx, dockerfile)
    assert again.id == stored.id  # type: ignore[attr-defined]
    done = [e for e in seen if isinstance(e, events.BuildDone)]
    assert done[0].cached_steps == sum(isinstance(e, events.StepCached) for e in seen) == 4


def test_a_failed_stage_stops_the_others_and_is_the_error(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile = ("FROM busybox:test AS bad\nRUN sleep 1 && exit 3\n"
                  "FROM busybox:test AS slow\nRUN sleep 2\nRUN echo never > /never\n"
                  "FROM busybox:test\nCOPY --from=bad /etc/passwd /a\nCOPY --from=slow /etc/passwd /b\n")
    (ctx / "Dockerfile").write_text(dockerfile)
    seen: list[events.Event] = []
    with pytest.raises(BuildError, match=r"Dockerfile:2: RUN sleep 1 && exit 3: returned a non-zero code: 3"):
        api.build(store, BuildOptions(context=ctx), listener=seen.append)
    started = [e.text for e in seen if isinstance(e, events.StepStarted)]
    assert "RUN sleep 2" in started  # it was running alongside ...
    assert "RUN echo never > /never" not in started  # ... and stopped before its next step
    assert not any(isinstance(e, events.StepStarted) and e.stage == "2" for e in seen)
    assert not any((store.root / "mounts").iterdir())
    assert str(store.root) not in Path("/proc/self/mountinfo").read_text()
    for runtime in ("runc", "crun"):
        state = store.root / runtime
        assert not state.exists() or not any(state.iterdir())
    # the stage that finished is kept: the fixed build reuses it
    (ctx / "Dockerfile").write_text(dockerfile.replace("exit 3", "true"))
    _, seen = _build(store, ctx, dockerfile.replace("exit 3", "true"))
    cached = {e.number for e in seen if isinstance(e, events.StepCached)}
    assert 4 in cached


def test_a_fully_cached_build_mounts_nothing(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No namespace, no overlay probe, no runc until a step misses: that is most of a cached build's start-up."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("x")
    dockerfile = "FROM busybox:test\nCOPY f /f\nRUN cat /f > /g\n"
    _build(store, ctx, dockerfile)
    from lamina.runtime import mountns

    def refuse() -> bool:
        raise AssertionError("a cached build entered a mount namespace")

    monkeypatch.setattr(mountns, "enter_private_mount_namespace", refuse)
    _, seen = _build(store, ctx, dockerfile)
    assert sum(isinstance(e, events.StepCached) for e in seen) == 2
    (ctx / "f").write_text("y")
    with pytest.raises(AssertionError, match="mount namespace"):
        _build(store, ctx, dockerfile)


def test_a_fully_cached_parallel_build_probes_and_recovers_nothing(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages on threads need the namespace first, but the overlay probe, recovery and runc wait for a miss."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile = ("FROM busybox:test AS a\nRUN echo a > /a\nFROM busybox:test AS b\nRUN echo b > /b\n"
                  "FROM busybox:test\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n")
    _build(store, ctx, dockerfile)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached build set up the snapshotter")

    monkeypatch.setattr(api, "_snapshotter", refuse)
    _, seen = _build(store, ctx, dockerfile)
    assert sum(isinstance(e, events.StepCached) for e in seen) == 4
    with pytest.raises(AssertionError, match="snapshotter"):
        _build(store, ctx, dockerfile.replace("echo b", "echo c"))


def test_the_mount_namespace_is_tried_once(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry from a stage thread would unshare that thread alone."""
    from lamina.runtime import mountns

    calls: list[int] = []
    monkeypatch.setattr(mountns, "enter_private_mount_namespace", lambda: calls.append(1) or False)
    env = api._StepEnvironment(store, "auto", "runc")
    env.enter_namespace()
    env.enter_namespace()
    assert calls == [1]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the store fsyncs, in order (the fsyncs still happen)."""
    from lamina.store import blobs as blobs_module

    paths: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(blobs_module.os, "fsync",
                        lambda fd: (paths.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    return paths


def test_layer_blobs_are_fsynced_once_before_the_image_names_them(store: Store, tmp_path: Path, synced: list[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen_at_put: list[list[str]] = []
    real_put = store.put_image
    monkeypatch.setattr(store, "put_image", lambda *a, **kw: (seen_at_put.append(list(synced)), real_put(*a, **kw))[1])
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    stored, _ = _build(store, ctx, "FROM busybox:test\nCOPY a.txt /a\nRUN echo b > /b\nRUN echo c > /c\n")
    built = [str(store.blobs.path(layer.digest)) for layer in stored.image.layers[1:]]  # type: ignore[attr-defined]
    assert len(seen_at_put) == 1 and set(built) <= set(seen_at_put[0])  # all on disk before the image
    assert str(store.blobs.path(stored.image.layers[1].digest).parent) in seen_at_put[0]  # type: ignore[attr-defined]


def test_a_failed_build_fsyncs_the_layers_it_cached(store: Store, tmp_path: Path, synced: list[str]) -> None:
    """The retry resumes from the cached steps, so their blobs go to disk even when the build fails."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    seen: list[events.Event] = []
    (ctx / "Dockerfile").write_text("FROM busybox:test\nCOPY a.txt /a\nRUN echo b > /b\nRUN exit 7\n")
    with pytest.raises(BuildError, match="returned a non-zero code: 7"):
        api.build(store, BuildOptions(context=ctx), listener=seen.append)
    made = [str(store.blobs.path(Digest.parse(d))) for d, *_ in store.db.layers()]
    built = [p for p in made if p in synced]
    assert len(built) == 2  # COPY's and the first RUN's layers
    assert str(Path(built[0]).parent) in synced
