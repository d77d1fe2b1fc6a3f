"""Garbage collection: prune images and build-cache records, then sweep what nothing references.

Mark: every digest reachable from the images (manifest, config, layers, an
index's manifests), from the cache records (any ``digest``/``diff_id`` they
name, whatever the record's shape) and from the layout's ``index.json``;
diff_ids through the ``layers`` table, so a layer's snapshot lives as long as
its blob. Sweep: blobs, ``layers`` rows and snapshot dirs not marked, plus
what dead processes left. Sweeping happens only while no lease is held
(:mod:`lamina.store.lease`); when operations are running, pruning still
removes rows (never ones used since the oldest of them began) and leaves
the sweep to the next run. A snapshot is renamed to ``.tmp-…`` before it is
deleted, so a crash never leaves a half-deleted one under its real name.
Pruning also drops the rows that describe what is gone (``cache_lineage``
without a record, ``image_steps`` without an image) and, with ``-a`` or an
``until`` filter, build logs; the sweep removes failed-RUN states that can no
longer be debugged (all of them with ``-a``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from lamina.errors import StoreError
from lamina.model import model
from lamina.store.lease import LeaseInfo, exclusive, leftovers, live_leases, remove, tree_size
from lamina.store.store import Store

CachePrune = Literal["none", "dangling", "all"]
CACHE_MOUNTS = "cache-mounts"  # RUN --mount=type=cache dirs (lamina.build.mountsetup.CACHE_DIR)
LOGS, DEBUG = "logs", "debug"  # kept builds' step logs and failed RUNs' files (lamina.build.buildlog)

_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- filters (pure) -------------------------------------------------------------------------------


def parse_until(value: str, now: float) -> float:
    """docker's ``until=``: a Go duration before ``now`` (``24h``, ``1h30m``), a Unix time or an RFC 3339 date."""
    text = value.strip()
    if text and _DURATION.sub("", text) == "" and _DURATION.match(text):
        return now - sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise StoreError(f"invalid filter 'until={value}': expected a duration (24h), "
                         "a Unix timestamp or an RFC 3339 date") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def parse_filters(filters: Iterable[str], now: float) -> float | None:
    """``--filter KEY=VALUE`` flags → the ``until`` cutoff (the only key prune takes here)."""
    until = None
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or key.strip().lower() != "until":
            raise StoreError(f"invalid filter '{item}' (supported: until=DURATION|TIMESTAMP)")
        until = parse_until(value, now)
    return until


# --- mark -----------------------------------------------------------------------------------------


@model
class Reach:
    """What the metadata keeps alive, by who keeps it."""

    tagged: frozenset[str]  # blob digests reachable from tagged images
    images: frozenset[str]  # ... from any image (and the layout's index.json)
    cache: frozenset[str]  # digests and diff_ids the cache records name
    diff_ids: frozenset[str]  # diff_ids of all of the above: their snapshots stay

    @property
    def live(self) -> frozenset[str]:
        return self.images | self.cache


def reachable(store: Store) -> Reach:
    """Mark from the images, the tags and the cache records (reads manifests and configs)."""
    tagged_manifests = {m for _, m in store.db.tags()}
    all_manifests = {row[0] for row in store.db.images()}
    images, tagged, diff_ids = set(), set(), set()
    for manifest in all_manifests | _layout_roots(store.root):
        found, found_diff_ids = closure(store, manifest)
        images |= found
        diff_ids |= found_diff_ids
        if manifest in tagged_manifests:
            tagged |= found
    cache: set[str] = set()
    for _key, record, _created, _used in store.db.cache_entries():
        cache.update(_digests_in(_loads(record)))
    layer_diff_ids = {digest: diff_id for digest, diff_id, _size in store.db.layers()}
    for digest in images | cache:
        if digest in layer_diff_ids:
            diff_ids.add(layer_diff_ids[digest])
    diff_ids |= cache  # records name their layers' diff_ids too
    return Reach(frozenset(tagged), frozenset(images), frozenset(cache), frozenset(diff_ids))


def closure(store: Store, manifest: str) -> tuple[set[str], set[str]]:
    """The blobs a manifest reaches (itself included) and its layers' diff_ids.

    A blob that is missing or unreadable ends the walk there.
    """
    found: set[str] = set()
    diff_ids: set[str] = set()
    todo = [manifest]
    while todo:
        digest = todo.pop()
        if digest in found or not _DIGEST.match(digest):
            continue
        found.add(digest)
        doc = _read_json(store.root, digest)
        if not isinstance(doc, dict):
            continue
        config = doc.get("config")
        if isinstance(config, dict) and isinstance(config.get("digest"), str):
            found.add(config["digest"])
            cfg = _read_json(store.root, config["digest"])
            rootfs = cfg.get("rootfs") if isinstance(cfg, dict) else None
            if isinstance(rootfs, dict) and isinstance(rootfs.get("diff_ids"), list):
                diff_ids.update(d for d in rootfs["diff_ids"] if isinstance(d, str))
        found.update(_descriptor_digests(doc.get("layers")))
        todo.extend(_descriptor_digests(doc.get("manifests")))  # an index: walk its manifests
    return found, diff_ids


def _descriptor_digests(descriptors: Any) -> list[str]:
    if not isinstance(descriptors, list):
        return []
    return [d["digest"] for d in descriptors if isinstance(d, dict) and isinstance(d.get("digest"), str)]


def _layout_roots(root: Path) -> set[str]:
    doc = _loads((root / "index.json").read_bytes()) if (root / "index.json").is_file() else None
    return set(_descriptor_digests(doc.get("manifests"))) if isinstance(doc, dict) else set()


def _digests_in(doc: Any) -> Iterator[str]:
    """Every ``digest``/``diff_id`` value in a JSON document, at any depth."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("digest", "diff_id") and isinstance(value, str) and _DIGEST.match(value):
                yield value
            else:
                yield from _digests_in(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from _digests_in(item)


def _read_json(root: Path, digest: str) -> Any:
    path = root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    try:
        if path.stat().st_size > 4 << 20:  # a layer, not a manifest or config
            return None
        return _loads(path.read_bytes())
    except OSError:
        return None


def _loads(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


# --- sweep ----------------------------------------------------------------------------------------


@model
class Sweep:
    """What a sweep removed, or who kept it from running (``busy``)."""

    blobs: tuple[str, ...] = ()
    snapshots: tuple[str, ...] = ()
    cache_mounts: tuple[str, ...] = ()
    debug: tuple[str, ...] = ()  # build IDs whose failed-RUN state was removed
    leftovers: int = 0
    reclaimed: int = 0
    busy: tuple[LeaseInfo, ...] = ()
    ran: bool = True


def sweep(store: Store, *, cache_mounts: bool = False, debug: Literal["stale", "all"] = "stale") -> Sweep:
    """Delete unreferenced blobs, layer rows and snapshots, and dead processes' leftovers.

    ``cache_mounts`` also empties the ``RUN --mount=type=cache`` directories (they are
    build cache to docker too). Failed RUNs kept for ``lamina debug`` go when
    :func:`stale_debug` (a snapshot under them swept), or all of them with
    ``debug="all"``. Runs only when it can hold the store exclusively;
    otherwise returns at once with ``ran=False`` and the live leases (new operations
    wait while it runs).
    """
    with exclusive(store.root) as alone:
        if not alone:
            return Sweep(busy=live_leases(store.root), ran=False)
        reach = reachable(store)
        live = reach.live
        # rows before blobs: a crash in between leaves an unreferenced blob, never a row without one
        store.db.remove_layers(d for d, _diff_id, _size in store.db.layers() if d not in live)
        reclaimed, blobs = 0, []
        for entry in _scan(store.root / "blobs" / "sha256"):
            if _HEX64.match(entry.name) and f"sha256:{entry.name}" not in live:
                try:
                    reclaimed += entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                blobs.append(f"sha256:{entry.name}")
        snapshots = []
        for entry in _scan(store.snapshots_dir):
            if _HEX64.match(entry.name) and f"sha256:{entry.name}" not in reach.diff_ids:
                doomed = store.snapshots_dir / f".tmp-gc-{entry.name[:12]}-{os.urandom(4).hex()}"
                try:
                    os.rename(entry.path, doomed)  # gone from its name at once; deleted below
                except FileNotFoundError:
                    continue
                reclaimed += remove(doomed)
                snapshots.append(f"sha256:{entry.name}")
        mounts = []
        for entry in _scan(store.root / CACHE_MOUNTS) if cache_mounts else []:
            doomed = store.root / "tmp" / f"gc-{os.urandom(6).hex()}"  # whole, or a leftover if we die
            try:
                os.rename(entry.path, doomed)
            except FileNotFoundError:
                continue
            reclaimed += remove(doomed)
            mounts.append(entry.name)
        debugged = [Path(e.path) for e in _scan(store.root / DEBUG)] if debug == "all" else stale_debug(store.root)
        for path in debugged:
            reclaimed += remove(path)
        extra = leftovers(store.root)
        for path in extra:
            reclaimed += remove(path)
        for entry in _scan(store.root / "locks"):  # store/keylock.py's files: no build can hold one now
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        return Sweep(tuple(blobs), tuple(snapshots), tuple(mounts), tuple(sorted(p.name for p in debugged)),
                     len(extra), reclaimed)


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []


# --- prune ----------------------------------------------------------------------------------------


@model
class PruneResult:
    images: tuple[str, ...]  # image IDs (config digests) of the images removed
    records: tuple[str, ...]  # cache keys removed
    sweep: Sweep = field(default_factory=Sweep)
    logs: tuple[str, ...] = ()  # build IDs whose logs were removed
    logs_size: int = 0

    @property
    def reclaimed(self) -> int:
        return self.sweep.reclaimed + self.logs_size


def prune(store: Store, *, images: bool = True, cache: CachePrune = "none", until: float | None = None,
          now: float | None = None) -> PruneResult:
    """Remove untagged images (``images``) and cache records, then sweep.

    ``cache``: ``dangling`` removes the records whose layer no image has (BuildKit's
    default), ``all`` every record and the RUN cache mounts. ``until`` keeps what was stored (images) or
    used (records) after that time. Rows used since the oldest live lease began
    are always kept, so a running build loses nothing it has looked up.
    What explains misses and times history steps goes with the records and
    images it describes; build logs go with ``all`` or ``until`` (older ones).
    """
    now = time.time() if now is None else now
    cutoff = min([now, *([until] if until is not None else []), *(lease.started for lease in live_leases(store.root))])
    removed: list[str] = []
    if images:
        for _manifest, config in store.db.prune_untagged_images(cutoff):
            if config not in removed:
                removed.append(config)
    keys: list[str] = []
    if cache != "none":
        entries = store.db.cache_entries()
        if cache == "dangling":
            shared = reachable(store).images
            layers = ((k, record_layer(rec)) for k, rec, _c, _u in entries)
            candidates = [k for k, layer in layers if layer is not None and layer not in shared]
        else:
            candidates = [k for k, _rec, _c, _u in entries]
        keys = store.db.prune_cache(candidates, cutoff)
    store.db.prune_image_steps()
    store.db.prune_lineage(cutoff)
    logs, logs_size = prune_logs(store.root, cutoff) if cache == "all" or until is not None else ([], 0)
    swept = sweep(store, cache_mounts=cache == "all", debug="all" if cache == "all" else "stale")
    return PruneResult(tuple(removed), tuple(keys), swept, tuple(logs), logs_size)


# --- kept builds: logs and debug states --------------------------------------------------------------


def _written(path: Path) -> float:
    """When a kept build's directory was last written (its summary file, else the directory)."""
    for candidate in (path / "build.json", path / "debug.json", path):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def prune_logs(root: Path, before: float) -> tuple[list[str], int]:
    """Remove the logs of builds last written before ``before``; their IDs and bytes."""
    removed, size = [], 0
    for entry in sorted(_scan(root / LOGS), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and _written(path) < before:
            size += remove(path)
            removed.append(entry.name)
    return removed, size


def stale_debug(root: Path) -> list[Path]:
    """Failed RUNs ``lamina debug`` can no longer open: unreadable, a lower snapshot gone, or their build's logs.

    Call it only where no other lease is live (a build writes one in steps).
    """
    stale = []
    for entry in _scan(root / DEBUG):
        path = Path(entry.path)
        try:
            doc = _loads((path / "debug.json").read_bytes())
        except OSError:
            doc = None
        lowers = doc.get("lowers") if isinstance(doc, dict) else None
        if (not isinstance(lowers, list) or not (path / "upper").is_dir() or not (root / LOGS / entry.name).is_dir()
                or any(not Path(str(lower)).is_dir() for lower in lowers)):
            stale.append(path)
    return stale


def record_layer(record: str) -> str | None:
    """The layer digest a cache record (JSON) names, if any."""
    doc = _loads(record)
    layer = doc.get("layer") if isinstance(doc, dict) else None
    digest = layer.get("digest") if isinstance(layer, dict) else None
    return digest if isinstance(digest, str) else None


# --- disk usage -----------------------------------------------------------------------------------


@model
class UsageRow:
    """One line of ``system df``: counts and bytes on disk."""

    kind: str
    total: int
    active: int
    size: int
    reclaimable: int


@model
class Usage:
    rows: tuple[UsageRow, ...]
    blob_sizes: dict[str, int]  # digest -> bytes, every blob in the store
    snapshot_sizes: dict[str, int]  # diff_id -> bytes
    reach: Reach
    log_sizes: dict[str, int] = field(default_factory=dict)  # build ID -> bytes of logs/<id>
    debug_sizes: dict[str, int] = field(default_factory=dict)  # build ID -> bytes of debug/<id>


def usage(store: Store) -> Usage:
    """What the store holds: images, build cache, snapshots, and blobs nothing references."""
    reach = reachable(store)
    sizes = {}
    for entry in _scan(store.root / "blobs" / "sha256"):
        if _HEX64.match(entry.name):
            try:
                sizes[f"sha256:{entry.name}"] = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    snaps = {f"sha256:{e.name}": tree_size(Path(e.path)) for e in _scan(store.snapshots_dir)
             if _HEX64.match(e.name)}

    def total(digests: Iterable[str]) -> int:
        return sum(sizes.get(d, 0) for d in set(digests))

    image_rows = store.db.images()
    tagged = {m for _, m in store.db.tags()}
    records = store.db.cache_entries()
    shared_records = sum(1 for _k, rec, _c, _u in records if record_layer(rec) in reach.images)
    active_snaps = [d for d in snaps if d in reach.diff_ids]
    orphans = [d for d in sizes if d not in reach.live]
    rows: tuple[UsageRow, ...] = (
        UsageRow("Images", len(image_rows), sum(1 for r in image_rows if r[0] in tagged),
                 total(reach.images), total(reach.images - reach.tagged - reach.cache)),
        UsageRow("Build Cache", len(records), shared_records,
                 total(reach.cache), total(reach.cache - reach.images)),
        UsageRow("Snapshots", len(snaps), len(active_snaps), sum(snaps.values()),
                 sum(s for d, s in snaps.items() if d not in reach.diff_ids)),
        UsageRow("Unreferenced", len(orphans), 0, total(orphans), total(orphans)),
    )
    logs = {e.name: tree_size(Path(e.path)) for e in _scan(store.root / LOGS) if e.is_dir(follow_symlinks=False)}
    debug = {e.name: tree_size(Path(e.path)) for e in _scan(store.root / DEBUG) if e.is_dir(follow_symlinks=False)}
    rows += (
        # logs are reclaimable by `prune -a` or a filter; debug states by `builder prune -a`
        UsageRow("Build Logs", len(logs), 0, sum(logs.values()), sum(logs.values())),
        UsageRow("Debug States", len(debug), 0, sum(debug.values()), sum(debug.values())),
    )
    return Usage(rows, sizes, snaps, reach, logs, debug)
