"""Choosing a snapshotter, and the package's public surface."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import lamina.snapshot
from lamina.errors import RuntimeError_
from lamina.snapshot import CopySnapshotter, OverlaySnapshotter, Snapshotter, available, choose


def test_choose_by_name() -> None:
    assert isinstance(choose("overlayfs"), OverlaySnapshotter)
    assert isinstance(choose("native"), CopySnapshotter)


def test_auto_prefers_overlay_when_it_mounts(tmp_path: Path) -> None:
    chosen = choose("auto", tmp_path)
    expected = OverlaySnapshotter if available(tmp_path) else CopySnapshotter
    assert isinstance(chosen, expected)
    assert not any(p.name.startswith(".probe-") for p in tmp_path.iterdir())


def test_overlay_is_unavailable_without_privileges() -> None:
    if os.geteuid() == 0:
        assert available(Path(tempfile.gettempdir())) in (True, False)
    else:
        assert available() is False


def test_unknown_name_is_an_error() -> None:
    with pytest.raises(RuntimeError_, match="unknown snapshotter"):
        choose("zfs")


def test_both_implementations_fit_the_protocol() -> None:
    snapshotters: list[Snapshotter] = [OverlaySnapshotter(), CopySnapshotter()]
    assert [s.name for s in snapshotters] == ["overlayfs", "native"]


def test_public_names_are_pinned() -> None:
    assert sorted(lamina.snapshot.__all__) == [
        "ActiveMount",
        "CopyMount",
        "CopySnapshotter",
        "DiffStats",
        "LayerEntry",
        "OverlayMount",
        "OverlaySnapshotter",
        "Snapshotter",
        "SnapshotterName",
        "UnpackStats",
        "available",
        "choose",
        "prune_runtime_stubs",
        "read_layer_entries",
        "unpack_layer",
        "unpack_to_snapshot",
        "write_layer",
        "write_layer_from_dir",
    ]
