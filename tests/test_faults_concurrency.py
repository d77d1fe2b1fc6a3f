"""Many lamina processes on one store: the same build at once, and pull + build + push + prune together.

Each test ends with the store checked (``system check``), nothing mounted or
running under it, and a sentinel tree beside it unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.faults import (
    check_clean,
    containers,
    finish,
    lamina,
    make_sentinel,
    mounts_under,
    start,
)
from helpers.images import import_busybox
from helpers.registry import running_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]

BUILDS = 4
# The first RUN writes random numbers: run twice, it would make two different layers.
DOCKERFILE = """FROM busybox:test
RUN echo "$RANDOM $RANDOM $RANDOM $$" > /rand && sleep 1
COPY data.txt /data.txt
ENV GREETING=hi
RUN cat /rand /data.txt > /both
LABEL done=yes
"""


def _context(path: Path, dockerfile: str = DOCKERFILE) -> Path:
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text(dockerfile)
    (path / "data.txt").write_text("data\n")
    return path


def _image_id(root: Path, name: str) -> str:
    return lamina(root, "inspect", "-f", "{{.Id}}", name).stdout.strip()


def test_the_same_build_at_once_runs_each_step_once(tmp_path: Path) -> None:
    sentinel = make_sentinel(tmp_path / "sentinel")
    store = tmp_path / "store"
    import_busybox(store, tmp_path / "work")
    ctx = _context(tmp_path / "ctx")
    procs = [start(store, "build", "--progress", "plain", "-t", f"same:{i}", str(ctx)) for i in range(BUILDS)]
    results = [finish(p) for p in procs]
    for code, out, err in results:
        assert code == 0, f"a concurrent build failed: {err}\n{out}"
    ids = {_image_id(store, f"same:{i}") for i in range(BUILDS)}
    assert len(ids) == 1, f"{BUILDS} builds of one Dockerfile made {len(ids)} images: {ids}"
    # every layer step ran in exactly one process; the others waited and used its record
    ran = sum(out.count("Step ") - out.count("Using cache") for _code, out, _err in results)
    cached = sum(out.count("Using cache") for _code, out, _err in results)
    steps = DOCKERFILE.count("\n")
    assert ran + cached == BUILDS * steps
    layer_steps = 3
    assert cached >= (BUILDS - 1) * layer_steps, [out for _c, out, _e in results]
    rand = {lamina(store, "run", "--rm", f"same:{i}", "cat", "/both").stdout for i in range(BUILDS)}
    assert len(rand) == 1 and rand.pop().endswith("data\n")
    assert len(list((store / "snapshots").iterdir())) == 1 + layer_steps  # the base, then one per layer step
    assert list((store / "locks").iterdir())  # one lock file per step key built
    lamina(store, "prune", "-f")  # alone on the store: the sweep removes them
    assert not list((store / "locks").iterdir())
    _assert_healthy(store)
    sentinel.assert_unchanged()


def test_pull_build_push_and_prune_at_once(tmp_path: Path) -> None:
    sentinel = make_sentinel(tmp_path / "sentinel")
    store, other = tmp_path / "store", tmp_path / "other"
    work = tmp_path / "work"
    import_busybox(store, work)
    import_busybox(other, work)
    ctx = _context(tmp_path / "ctx")
    other_ctx = _context(tmp_path / "other-ctx", "FROM busybox:test\nRUN echo pulled > /pulled\n")
    with running_registry(tmp_path / "registry") as reg:
        remote = f"{reg.host}/faults/remote:1"
        lamina(other, "build", "-q", "-t", remote, str(other_ctx))
        lamina(other, "push", remote)
        for round_ in range(2):
            procs = {
                "build": start(store, "build", "-q", "-t", f"app:{round_}", str(ctx)),
                "pull": start(store, "pull", remote),
                "push": start(store, "push", "busybox:test", f"{reg.host}/faults/bb:{round_}"),
                "prune": start(store, "system", "prune", "-a", "-f"),
                "builder prune": start(store, "builder", "prune", "-a", "-f"),
            }
            for what, proc in procs.items():
                code, out, err = finish(proc)
                assert code == 0, f"{what} failed while others ran: {err}\n{out}"
            _assert_healthy(store)
            lamina(store, "system", "prune", "-a", "-f")  # alone now: it sweeps
            _assert_healthy(store)
        for name, command in ((remote, "cat /pulled"), ("app:0", "cat /both"), ("app:1", "cat /both"),
                              ("busybox:test", "true")):
            lamina(store, "run", "--rm", name, "sh", "-c", command)
        fresh = tmp_path / "fresh"
        lamina(fresh, "pull", f"{reg.host}/faults/bb:1")
        assert lamina(fresh, "run", "--rm", f"{reg.host}/faults/bb:1", "echo", "ok").stdout == "ok\n"
    lamina(store, "build", "-q", "-t", "after", str(ctx))  # a normal build still works
    _assert_healthy(store)
    sentinel.assert_unchanged()


def _assert_healthy(store: Path) -> None:
    check_clean(store)
    assert not mounts_under(store), mounts_under(store)
    assert not containers(store), containers(store)
