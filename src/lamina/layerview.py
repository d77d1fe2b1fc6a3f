"""What each layer does to the filesystem, and the bytes it ships for nothing (a ``dive``-like view).

:func:`analyze` reads every layer's tar once, oldest first, keeping a tree of what
the layers below hold. An entry is *added* when nothing was at its path, *changed*
when a lower layer had it (a directory only when its mode or owner differ, since
tars repeat parent directories), and a whiteout (``.wh.NAME``, ``.wh..wh..opq``)
*deletes* what the lower layers held. A file's bytes are *wasted* when a later
layer overwrites or deletes it: they are downloaded and stored yet never seen.
Sizes count regular files' bytes, as docker's layer sizes do. The efficiency is
``1 - wasted / size``; dive's score (per path, the smallest version over the sum
of all versions) is the same number except when an overwrite grows a file or a
deletion is counted twice, which dive does.

Only :func:`image_layers` touches the store; everything else is over streams.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Literal

from lamina.errors import LayerError
from lamina.model import model
from lamina.store.store import Store, StoredImage

ChangeKind = Literal["added", "changed", "deleted"]
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


@model
class FileChange:
    """One path a layer touches; ``size`` is the entry's bytes, or the bytes removed for a deletion."""

    path: str
    kind: ChangeKind
    size: int
    is_dir: bool = False
    link: str = ""  # a symbolic or hard link's target


@model
class WastedFile:
    """A file of layer ``layer`` that layer ``hidden_by`` overwrote or deleted (indexes from 0)."""

    path: str
    size: int
    layer: int
    hidden_by: int
    how: Literal["overwritten", "deleted"]


@model
class LayerInput:
    """A layer to analyze: its identity, its history text, and how to open its uncompressed tar."""

    digest: str
    diff_id: str
    blob_size: int
    created_by: str
    open: Callable[[], IO[bytes]]


@model
class LayerView:
    index: int
    digest: str
    diff_id: str
    created_by: str
    blob_size: int       # compressed, as stored and pushed
    size: int            # its regular files' bytes: the size `lamina history` and docker show
    wasted: int          # of those bytes, the ones a later layer hides
    changes: tuple[FileChange, ...]  # sorted by path

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def to_json(self, limit: int = 0) -> dict[str, Any]:
        shown = top_changes(self.changes, limit)
        return {"index": self.index, "digest": self.digest, "diff_id": self.diff_id,
                "created_by": self.created_by, "blob_size": self.blob_size, "size": self.size,
                "wasted": self.wasted,
                "added": self.count("added"), "changed": self.count("changed"), "deleted": self.count("deleted"),
                "files": [{"path": c.path, "kind": c.kind, "size": c.size, "dir": c.is_dir,
                           **({"link": c.link} if c.link else {})} for c in shown],
                "files_omitted": len(self.changes) - len(shown)}


@model
class LayersReport:
    image: str
    name: str
    layers: tuple[LayerView, ...]
    wasted_files: tuple[WastedFile, ...]  # largest first

    @property
    def size(self) -> int:
        return sum(lay.size for lay in self.layers)

    @property
    def wasted(self) -> int:
        return sum(w.size for w in self.wasted_files)

    @property
    def efficiency(self) -> float:
        return 1.0 if self.size == 0 else 1.0 - self.wasted / self.size

    def to_json(self, limit: int = 0) -> dict[str, Any]:
        wasted = self.wasted_files[:limit] if limit > 0 else self.wasted_files
        return {"image": self.image, "name": self.name, "size": self.size,
                "wasted": self.wasted, "efficiency": round(self.efficiency, 6),
                "layers": [lay.to_json(limit) for lay in self.layers],
                "wasted_files": [{"path": w.path, "size": w.size, "layer": w.layer, "hidden_by": w.hidden_by,
                                  "how": w.how} for w in wasted]}


def top_changes(changes: tuple[FileChange, ...], limit: int) -> tuple[FileChange, ...]:
    """The ``limit`` largest changes (all when ``limit`` <= 0), back in path order."""
    if limit <= 0 or len(changes) <= limit:
        return changes
    chosen = sorted(changes, key=lambda c: (-c.size, c.path))[:limit]
    return tuple(sorted(chosen, key=lambda c: c.path))


# the tree of what the layers so far hold -------------------------------------------------------

class _Node:
    __slots__ = ("children", "is_dir", "layer", "meta", "size")

    def __init__(self, layer: int = -1, size: int = 0, is_dir: bool = True, meta: tuple[int, ...] = ()) -> None:
        self.children: dict[str, _Node] = {}
        self.layer = layer   # who wrote the entry; -1 for a directory no tar listed
        self.size = size
        self.is_dir = is_dir
        self.meta = meta     # a directory's (mode, uid, gid)


def _walk(node: _Node, path: str) -> Iterator[tuple[str, _Node]]:
    stack = [(path, node)]
    while stack:
        here, current = stack.pop()
        yield here, current
        stack.extend((f"{here}/{name}", child) for name, child in current.children.items())


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


class _Analyzer:
    def __init__(self) -> None:
        self.root = _Node()
        self.wasted: list[WastedFile] = []
        self.wasted_by_layer: dict[int, int] = {}

    def find(self, parts: list[str]) -> _Node | None:
        node: _Node | None = self.root
        for part in parts:
            node = node.children.get(part) if node is not None else None
        return node

    def hide(self, node: _Node, path: str, by: int, how: Literal["overwritten", "deleted"]) -> int:
        """Record every file under ``node`` (itself included) as wasted; the bytes removed."""
        removed = 0
        for here, current in _walk(node, path):
            if not current.is_dir and current.layer >= 0 and current.size:
                self.wasted.append(WastedFile(here, current.size, current.layer, by, how))
                self.wasted_by_layer[current.layer] = self.wasted_by_layer.get(current.layer, 0) + current.size
                removed += current.size
        return removed

    def layer(self, index: int, members: Iterable[tarfile.TarInfo]) -> tuple[list[FileChange], int]:
        entries: list[tuple[list[str], tarfile.TarInfo]] = []
        changes: dict[str, FileChange] = {}
        opaque: list[list[str]] = []
        deleted: list[list[str]] = []
        file_bytes = 0
        for info in members:
            parts = _parts(info.name)
            if not parts:
                continue
            if parts[-1] == _OPAQUE:
                opaque.append(parts[:-1])
            elif parts[-1].startswith(_WHITEOUT):
                deleted.append(parts[:-1] + [parts[-1][len(_WHITEOUT):]])
            else:
                entries.append((parts, info))
                file_bytes += info.size if info.isreg() else 0
        # whiteouts apply to the layers below only, so before this layer's own entries
        for parts in opaque:
            node = self.find(parts)
            if node is None:
                continue
            for name, child in sorted(node.children.items()):
                path = "/" + "/".join(parts + [name])
                changes[path] = FileChange(path, "deleted", self.hide(child, path, index, "deleted"), child.is_dir)
            node.children.clear()
        for parts in deleted:
            if any(parts[: len(o)] == o for o in opaque):
                continue
            path = "/" + "/".join(parts)
            parent, node = self.find(parts[:-1]), self.find(parts)
            if node is None or parent is None:
                changes[path] = FileChange(path, "deleted", 0)
                continue
            changes[path] = FileChange(path, "deleted", self.hide(node, path, index, "deleted"), node.is_dir)
            del parent.children[parts[-1]]
        for parts, info in entries:
            self._entry(index, parts, info, changes)
        return sorted(changes.values(), key=lambda c: c.path), file_bytes

    def _entry(self, index: int, parts: list[str], info: tarfile.TarInfo, changes: dict[str, FileChange]) -> None:
        path = "/" + "/".join(parts)
        parent = self.root
        for part in parts[:-1]:
            parent = parent.children.setdefault(part, _Node())
        old = parent.children.get(parts[-1])
        is_dir = info.isdir()
        size = info.size if info.isreg() else 0
        meta = (info.mode, info.uid, info.gid) if is_dir else ()
        if old is not None and old.is_dir and is_dir:
            if old.layer >= 0 and old.meta != meta and path not in changes:
                changes[path] = FileChange(path, "changed", 0, True)
            elif old.layer < 0 and path not in changes:
                changes[path] = FileChange(path, "added", 0, True)
            old.layer, old.meta = index, meta
            return
        earlier = changes.get(path)  # this layer's own deletion, or an earlier entry of the same path
        kind: ChangeKind = "added" if earlier is None else "changed"
        if old is not None:
            self.hide(old, path, index, "overwritten")
            if earlier is not None and earlier.kind != "deleted":
                kind = earlier.kind
            elif earlier is None and old.layer >= 0:
                kind = "changed"
        parent.children[parts[-1]] = _Node(index, size, is_dir, meta)
        link = info.linkname if info.issym() or info.islnk() else ""
        changes[path] = FileChange(path, kind, size, is_dir, link)


class _Counter:
    """Counts the bytes read through it, to tell an empty blob from a broken tar."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data


def analyze(image: str, name: str, layers: Iterable[LayerInput]) -> LayersReport:
    """Read each layer's tar in order (each stream is opened, read to its end and closed)."""
    analyzer = _Analyzer()
    pending: list[tuple[LayerInput, list[FileChange], int]] = []
    for index, layer in enumerate(layers):
        with layer.open() as raw:
            counter = _Counter(raw)
            try:
                with tarfile.open(fileobj=counter, mode="r|") as tar:  # type: ignore[call-overload]
                    changes, size = analyzer.layer(index, tar)
            except (tarfile.TarError, EOFError, OSError) as exc:
                if counter.count == 0:  # an empty blob: a layer with nothing in it
                    changes, size = [], 0
                else:
                    raise LayerError(f"reading layer {layer.digest}: {exc}") from exc
        pending.append((layer, changes, size))
    views = tuple(LayerView(i, lay.digest, lay.diff_id, lay.created_by, lay.blob_size, size,
                            analyzer.wasted_by_layer.get(i, 0), tuple(changes))
                  for i, (lay, changes, size) in enumerate(pending))
    wasted = tuple(sorted(analyzer.wasted, key=lambda w: (-w.size, w.path, w.layer)))
    return LayersReport(image, name, views, wasted)


def image_layers(store: Store, stored: StoredImage, name: str = "") -> LayersReport:
    """The report for an image in the store; each layer's instruction comes from its history entry."""
    from lamina.image.layerio import open_layer

    texts = [h.created_by or h.comment for h in stored.image.config.history if not h.empty_layer]
    inputs = []
    for i, layer in enumerate(stored.image.layers):
        def opener(digest: Any = layer.digest) -> IO[bytes]:
            return open_layer(store.blobs.open(digest))

        inputs.append(LayerInput(str(layer.digest), str(layer.diff_id), layer.size,
                                 texts[i] if i < len(texts) else "", opener))
    return analyze(str(stored.id), name, inputs)
