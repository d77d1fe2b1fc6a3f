"""``lamina prune``, ``builder prune``, ``system df|check|prune`` as a user runs them (docker's output)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli
from helpers.images import busybox_rootfs_tar

SRC = str(Path(__file__).parents[1] / "src")


def lamina(root: Path, *args: str, stdin: str = "", code: int = 0) -> subprocess.CompletedProcess[str]:
    return cli.lamina(root, *args, stdin=stdin, code=code, env={"PYTHONPATH": SRC}, timeout=120)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a tagged image and a dangling one (the tag moved on)."""
    work = tmp_path_factory.mktemp("system")
    store = work / "store"
    for i, extra in enumerate(({"v": b"1"}, {"v": b"2"})):
        tarball = work / f"rootfs{i}.tar"
        tarball.write_bytes(busybox_rootfs_tar(extra))
        lamina(store, "import", str(tarball), "bb:1")
    return store


@pytest.fixture
def root(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template, tmp_path / "store", symlinks=True)
    return tmp_path / "store"


def _image_ids(root: Path) -> list[str]:
    return lamina(root, "images", "-q").stdout.split()


def test_prune_asks_first_and_prints_like_docker(root: Path) -> None:
    assert len(_image_ids(root)) == 2
    declined = lamina(root, "prune", stdin="n\n")
    assert declined.stdout == ("WARNING! This will remove all dangling images.\n"
                               "Are you sure you want to continue? [y/N] ")
    assert len(_image_ids(root)) == 2
    out = lamina(root, "prune", stdin="y\n").stdout.split("[y/N] ", 1)[1]
    assert re.fullmatch(r"Deleted Images:\ndeleted: sha256:[0-9a-f]{64}\n\nTotal reclaimed space: [\d.]+[kM]?B\n",
                        out), out
    assert len(_image_ids(root)) == 1
    assert lamina(root, "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    assert lamina(root, "system", "check").stdout.endswith(": no problems\n")


def test_prune_filter(root: Path) -> None:
    assert lamina(root, "prune", "-f", "--filter", "until=1h").stdout == "Total reclaimed space: 0B\n"
    assert len(_image_ids(root)) == 2
    bad = lamina(root, "prune", "-f", "--filter", "label=x", code=1)
    assert bad.stderr == "Error: invalid filter 'label=x' (supported: until=DURATION|TIMESTAMP)\n"
    bad = lamina(root, "builder", "prune", "-f", "--filter", "until=soon", code=1)
    assert bad.stderr.startswith("Error: invalid filter 'until=soon'") and bad.stderr.count("\n") == 1


def test_builder_and_system_prune(root: Path) -> None:
    assert lamina(root, "builder", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    prompt = lamina(root, "builder", "prune", "--all", stdin="").stdout
    assert prompt == "WARNING! This will remove all build cache. Are you sure you want to continue? [y/N] "
    out = lamina(root, "system", "prune", "-af").stdout
    assert out.startswith("Deleted Images:\ndeleted: sha256:") and "Total reclaimed space:" in out
    assert len(_image_ids(root)) == 1


def test_system_df(root: Path) -> None:
    lines = lamina(root, "system", "df").stdout.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split()[0] for line in lines[1:]] == ["Images", "Build", "Snapshots", "Unreferenced", "Build", "Debug"]
    images = lines[1].split()
    assert images[1:3] == ["2", "1"] and images[5].startswith("(") and images[5] != "(0%)"
    verbose = lamina(root, "system", "df", "-v").stdout
    for heading in ("Images space usage:", "REPOSITORY", "Build cache usage: 0B", "CACHE ID", "Snapshots space usage:"):
        assert heading in verbose
    assert re.search(r"^bb +1 +[0-9a-f]{12} ", verbose, re.M) and re.search(r"^<none> +<none> ", verbose, re.M)


def test_system_check_finds_and_repairs(root: Path) -> None:
    assert re.fullmatch(r"Checked 6 blobs \(.+\), 2 images, 1 tags, 0 cache records, 0 snapshots: no problems\n",
                        lamina(root, "system", "check").stdout)
    manifest = lamina(root, "images", "--digests").stdout.splitlines()[1].split()[2]
    blob = root / "blobs" / "sha256" / manifest.removeprefix("sha256:")
    blob.write_bytes(b"{}")
    found = lamina(root, "system", "check", code=1).stdout.splitlines()
    assert found[0].startswith(f"blob {manifest}: content hashes to sha256:")
    assert found[1] == f"image {manifest}: manifest blob is corrupt (bb:1)"
    assert found[2] == f"tag bb:1: its image {manifest} is broken"
    assert found[3].endswith(": 3 problems")
    repaired = lamina(root, "system", "check", "--repair").stdout.splitlines()
    assert repaired[4:] == [f"repaired: removed blob {manifest}",
                            f"repaired: removed image {manifest} (pull or build it again)",
                            "repaired: removed tag bb:1", "3 of 3 problems repaired"]
    assert lamina(root, "system", "check").stdout.endswith(": no problems\n")


def test_repair_refuses_while_the_store_is_in_use(root: Path) -> None:
    code = ("import time\nfrom lamina.store.lease import Lease\n"
            f"with Lease({str(root)!r}, 'push'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        refused = lamina(root, "system", "check", "--repair", code=1)
        assert re.fullmatch(r"Error: cannot repair while the store is in use by push \(pid \d+, for \d+s\); "
                            r"try again when it is done\n", refused.stderr)
        checked = lamina(root, "system", "check")
        assert checked.stderr.startswith("Note: temp files were not checked")
        pruned = lamina(root, "prune", "-f")
        assert pruned.stdout.startswith("Deleted Images:") and "unreferenced blobs and snapshots were kept" in pruned.stderr
    finally:
        holder.kill()
        holder.wait()
    assert lamina(root, "prune", "-f").stdout != "Total reclaimed space: 0B\n"  # the sweep catches up


def test_commands_leave_no_lease_behind(root: Path) -> None:
    lamina(root, "images")
    lamina(root, "system", "df")
    assert sorted(p.name for p in (root / "leases").iterdir()) == ["lock"]
    listed = lamina(root, "--help").stdout
    assert all(re.search(rf"^  {name} ", listed, re.M) for name in ("prune", "builder", "system"))
