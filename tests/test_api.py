"""The Python API's edges: recovery after a killed process (the rest is covered per command)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from helpers.images import busybox_rootfs_tar
from lamina.api import recover
from lamina.snapshot import OverlaySnapshotter
from lamina.store.store import Store

# a dead build: its container goes on writing new files into the upper dir after lamina is killed
_ORPHAN = """
import os, sys, threading, time
from pathlib import Path
from lamina.runtime.runc import RuncExecutor
from lamina.runtime.spec import ProcessSpec
from lamina.snapshot import OverlaySnapshotter
store, lower = Path(sys.argv[1]), Path(sys.argv[2])
mount = OverlaySnapshotter().prepare([lower], store / "mounts")
executor = RuncExecutor(store / "runc", bundle_dir=store / "tmp")
loop = "i=0; while true; do i=$((i+1)); mkdir -p /w/$i && echo $i > /w/$i/f; done"
spec = ProcessSpec(args=("/bin/sh", "-c", loop), env=("PATH=/bin",), cwd="/", uid=0, gid=0)
threading.Thread(target=executor.run, args=(mount.root, spec), daemon=True).start()
while not any((mount.upper / "w").glob("*/f")) if (mount.upper / "w").is_dir() else True:
    time.sleep(0.05)
os._exit(0)
"""


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")
def test_recover_stops_a_dead_builds_container_before_removing_its_work_dir(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    lower = tmp_path / "lower"
    lower.mkdir()
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_tar())) as tar:
        tar.extractall(lower)
    (store.root / "tmp").mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-c", _ORPHAN, str(store.root), str(lower)], check=True, timeout=60)
    assert os.listdir(store.root / "runc")  # the container outlived its owner
    time.sleep(0.2)
    try:
        recover(store, OverlaySnapshotter())
        assert [e for e in os.listdir(store.root / "mounts") if not e.startswith(".")] == []
        listed = subprocess.run(["runc", "--root", str(store.root / "runc"), "list", "-q"],
                                capture_output=True, text=True, check=True)
        assert listed.stdout.strip() == ""
    finally:
        for cid in os.listdir(store.root / "runc"):
            subprocess.run(["runc", "--root", str(store.root / "runc"), "delete", "-f", cid], check=False)
        store.close()


def test_a_memo_lookup_hands_its_open_metadata_to_the_store_that_follows(tmp_path: Path) -> None:
    """Closing SQLite's last connection checkpoints and deletes the WAL (four syncs); the lookup's
    connection becomes the store's instead, and only the last store's is kept open."""
    from lamina import api
    from lamina.build.options import BuildOptions

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nLABEL a=b\n")
    roots = [tmp_path / "one", tmp_path / "two"]
    for root in roots:
        Store(root).close()
    options = BuildOptions(context=context)
    assert api.build_memoized(roots[0], options) is None  # no memo yet: a miss
    first = api._memo_metadata.kept[roots[0].absolute()]
    store = api.open_store(roots[0])
    assert store.db is first and not api._memo_metadata.kept
    assert (roots[0] / "lamina.db-wal").exists()  # not checkpointed away
    assert api.build_memoized(roots[1], options) is None
    assert api.build_memoized(roots[1], options) is None
    assert list(api._memo_metadata.kept) == [roots[1].absolute()]
    elsewhere = threading.Thread(target=api.build_memoized, args=(roots[0], options))
    elsewhere.start()
    elsewhere.join()  # another thread's lookup keeps its own connection, and closes none of ours
    assert list(api._memo_metadata.kept) == [roots[1].absolute()]
    assert api._memo_metadata.kept[roots[1].absolute()].cache_get("none", touch=False) is None  # still open
    store.close()
    api._memo_metadata.kept.pop(roots[1].absolute()).close()
