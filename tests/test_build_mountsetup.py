"""RUN --mount on the host: cache dirs, bind sources, tmpfs, stubs, output redaction, and real builds."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from helpers.images import busybox_image
from lamina import api
from lamina.build import events
from lamina.build.mountsetup import CACHE_DIR, _StubTracker, cache_dir_name, cleanup_stale
from lamina.build.options import BuildOptions
from lamina.errors import LaminaError
from lamina.image.layerio import open_layer
from lamina.snapshot.diff import read_layer_entries
from lamina.store.store import Store, StoredImage

needs_runc = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")


# pure-ish pieces ---------------------------------------------------------------------------


def test_cache_dir_names_are_safe_and_stable() -> None:
    assert cache_dir_name("/root/.cache/pip") == cache_dir_name("/root/.cache/pip")
    assert cache_dir_name("../../etc") != cache_dir_name("/etc")
    assert "/" not in cache_dir_name("../../etc") and len(cache_dir_name("x")) == 32


def test_stub_tracker_removes_what_the_runtime_made_and_restores_times(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "root").mkdir(parents=True)
    (root / "keep").mkdir()
    os.utime(root / "root", ns=(1_000_000_000, 2_000_000_000))
    tracker = _StubTracker(root, ["/root/.cache/pip", "/keep", "/run/secrets/tok", "/new/dir"])
    (root / "root/.cache/pip").mkdir(parents=True)   # what runc does for a directory mount
    (root / "run/secrets").mkdir(parents=True)
    (root / "run/secrets/tok").touch()               # ... and for a file mount
    (root / "new/dir").mkdir(parents=True)
    (root / "new/written").write_text("by the command")
    tracker.cleanup()
    assert sorted(p.name for p in root.iterdir()) == ["keep", "new", "root"]
    assert not any((root / "root").iterdir())
    assert (root / "root").stat().st_mtime_ns == 2_000_000_000
    assert sorted(p.name for p in (root / "new").iterdir()) == ["written"]


def test_cleanup_stale_removes_only_dead_processes_dirs(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp / f"runmnt-{os.getpid()}-live").mkdir()
    (tmp / "runmnt-999999999-dead").mkdir()
    (tmp / "other").mkdir()
    assert cleanup_stale(tmp_path) == 1
    assert sorted(p.name for p in tmp.iterdir()) == ["other", f"runmnt-{os.getpid()}-live"]


# real builds ------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = api.open_store(tmp_path / "store")
    busybox_image(s)
    return s


def _build(store: Store, ctx: Path, dockerfile: str, **options: object) -> tuple[StoredImage, str, int]:
    (ctx / "Dockerfile").write_text(dockerfile)
    output: list[bytes] = []
    cached = [0]

    def listen(event: events.Event) -> None:
        if isinstance(event, events.StepOutput):
            output.append(event.data)
        elif isinstance(event, events.StepCached):
            cached[0] += 1

    image = api.build(store, BuildOptions(context=ctx, **options), listener=listen)  # type: ignore[arg-type]
    return image, b"".join(output).decode(), cached[0]


def _entries(store: Store, image: StoredImage) -> list[list[str]]:
    out = []
    for layer in image.image.layers[1:]:
        with open_layer(store.blobs.open(layer.digest)) as stream:
            out.append([e.path for e in read_layer_entries(stream)])
    return out


@needs_runc
def test_cache_mount_persists_between_builds_and_stays_out_of_the_image(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    text = ("FROM busybox:test\nARG N=1\n"
            "RUN --mount=type=cache,target=/root/.cache/pip echo $N >> /root/.cache/pip/log && cat /root/.cache/pip/log\n")
    image, out, _ = _build(store, ctx, text)
    assert out == "1\n"
    image, out, _ = _build(store, ctx, text, build_args={"N": "2"})
    assert out == "1\n2\n"                                          # the second build saw the first's file
    assert _entries(store, image) == [[]]                           # no /root/.cache stub, no /root copy-up
    _, out, cached = _build(store, ctx, text, build_args={"N": "2"})
    assert cached == 2 and out == ""                                # the cache's content is not in the key
    cache = store.root / CACHE_DIR / cache_dir_name("/root/.cache/pip")
    assert (cache / "log").read_text() == "1\n2\n"


@needs_runc
def test_cache_mount_options_sharing_and_seed(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    _, out, _ = _build(store, ctx, (
        "FROM busybox:test AS seed\nRUN mkdir -p /s && echo seeded > /s/f\n"
        "FROM busybox:test\n"
        "RUN --mount=type=cache,id=c1,target=/c,uid=7,gid=8,mode=0750,sharing=locked stat -c '%u %g %a' /c\n"
        "RUN --mount=type=cache,id=c2,target=/c,from=seed,source=/s,sharing=private cat /c/f\n"
        "RUN --mount=type=cache,id=c1,target=/c,ro sh -c 'touch /c/x 2>/dev/null || echo read-only'\n"))
    assert out == "7 8 750\nseeded\nread-only\n"


@needs_runc
def test_bind_mounts_from_context_and_stage(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src/a.txt").write_text("A")
    (ctx / "src/ignored.txt").write_text("I")
    (ctx / ".dockerignore").write_text("src/ignored.txt\n")
    text = ("FROM busybox:test AS tools\nRUN echo tool > /tool\n"
            "FROM busybox:test\nWORKDIR /w\n"
            "RUN --mount=type=bind,source=src,target=s ls s && cat s/a.txt && ! touch s/new 2>/dev/null\n"
            "RUN --mount=type=bind,source=src,target=/s,rw touch /s/new && ls /s\n"
            "RUN --mount=type=bind,source=src/a.txt,target=/etc/a.txt cat /etc/a.txt\n"
            "RUN --mount=type=bind,from=tools,source=/tool,target=/t cat /t\n")
    image, out, _ = _build(store, ctx, text)
    assert out == "a.txt\nAa.txt\nnew\nAtool\n"
    assert not (ctx / "src/new").exists()                             # rw writes are thrown away
    assert _entries(store, image)[-4:] == [[], [], [], []]            # no stub of /w/s, /s, /etc/a.txt, /t
    _, _, cached = _build(store, ctx, text)
    assert cached == 6
    (ctx / "src/a.txt").write_text("B")                               # a bind source's content is in the key
    _, out, cached = _build(store, ctx, text)
    assert cached == 2 and out == "a.txt\nBa.txt\nnew\nBtool\n"
    (ctx / "src/ignored.txt").write_text("changed")                   # ... ignored files are not
    assert _build(store, ctx, text)[2] == 6


@needs_runc
def test_tmpfs_mount_and_per_step_network(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    image, out, _ = _build(store, ctx, (
        "FROM busybox:test\nRUN mkdir -p /var/lib\n"
        "RUN --mount=type=tmpfs,target=/var/lib/apt/lists,size=1m echo x > /var/lib/apt/lists/f "
        "&& df -k /var/lib/apt/lists | tail -1\n"
        "RUN --network=none ls /sys/class/net\n"
        "RUN --network=default ls /sys/class/net | grep -c -v '^lo$' >/dev/null && echo host\n"))
    assert out.splitlines()[0].split()[1] == "1024"
    assert out.splitlines()[1:] == ["lo", "host"]
    assert _entries(store, image) == [["var", "var/lib"], [], [], []]   # no var/, var/lib/ copy-ups, no stubs


@needs_runc
def test_mount_errors_are_one_line(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for text, message in (
        ("RUN --mount=type=ssh true", "Dockerfile:2: --mount=type=ssh is not supported"),
        ("RUN --mount=type=bind,source=nope,target=/x true", "Dockerfile:2: --mount source=nope: "),
        ("RUN --mount=type=bind,from=nowhere:1,target=/x true", "Dockerfile:2: --mount from=nowhere:1: "),
        ("RUN --mount=type=secret,id=s,required true", "Dockerfile:2: RUN true: secret s not found"),
    ):
        with pytest.raises(LaminaError) as info:
            _build(store, ctx, f"FROM busybox:test\n{text}\n")
        assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert not list((store.root / "tmp").glob("runmnt-*"))
    deadline = time.monotonic() + 5
    while list((store.root / "mounts").glob("mnt-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list((store.root / "mounts").glob("mnt-*"))
