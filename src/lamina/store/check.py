"""``system check``: verify a store end to end, and repair what can be repaired.

Checked: every blob's bytes against its name (streamed, on a few threads);
every image's manifest, config and layers (present and intact, config
matching the recorded image ID, one diff_id per layer); every tag → an intact
image; every cache record → an intact layer blob; every ``layers`` row → its
blob; snapshot dirs (complete ones carry their diff_id as name — unpacks and
commits rename into place — so a ``.tmp-…`` one is an interrupted unpack);
leftovers of dead processes and failed RUNs that can no longer be debugged;
the layout files and SQLite's own quick check.

Repairs remove what is broken, never what is sound: corrupt blobs, images
whose blobs are missing or corrupt (pull or build them again), tags and
records pointing at them, incomplete snapshots and leftovers. A check after
a repair reports nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from lamina.errors import LaminaError
from lamina.model import model
from lamina.oci.config import ImageConfig
from lamina.oci.digest import Digest
from lamina.oci.manifest import Index, Manifest, decode
from lamina.oci.reference import Reference
from lamina.store.blobs import LAYOUT_FILE
from lamina.store.lease import leftovers, remove
from lamina.store.store import Store

Kind = Literal["blob", "image", "tag", "cache", "layer", "snapshot", "leftover", "layout", "database"]

_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_CHUNK = 1 << 20
_LABEL = {"blob": "blob", "image": "image", "tag": "tag", "cache": "cache record", "layer": "layer record",
          "snapshot": "snapshot", "leftover": "leftover", "layout": "layout file", "database": "database"}


@model
class Problem:
    """One thing wrong: what (kind + subject, which repair acts on) and why."""

    kind: Kind
    subject: str  # a digest, tag (as stored), cache key or store-relative path
    detail: str
    shown: str = ""  # the subject as users write it, when that differs (a tag's familiar name)

    def __str__(self) -> str:
        return f"{_LABEL[self.kind]} {self.shown or self.subject}: {self.detail}"


@model
class Report:
    problems: tuple[Problem, ...]
    blobs: int
    blob_bytes: int
    images: int
    tags: int
    records: int
    snapshots: int


def check(store: Store, *, with_leftovers: bool = True, workers: int | None = None) -> Report:
    """Verify the store; ``with_leftovers`` only when no other process holds a lease."""
    problems: list[Problem] = []
    good, blob_bytes, count = _check_blobs(store, problems, workers or min(4, os.cpu_count() or 1))
    problems += _check_layout(store.root)
    images = store.db.images()
    broken = _check_images(store, images, good, problems)
    tags = store.db.tags()
    known = {row[0] for row in images}
    for name, manifest in tags:
        if manifest not in known:
            problems.append(Problem("tag", name, f"points to {manifest}, which is not in the store", _familiar(name)))
        elif manifest in broken:
            problems.append(Problem("tag", name, f"its image {manifest} is broken", _familiar(name)))
    records = store.db.cache_entries()
    for key, record, _created, _used in records:
        detail = _record_problem(record, good)
        if detail:
            problems.append(Problem("cache", key, detail))
    for digest, _diff_id, _size in store.db.layers():
        if digest not in good:
            problems.append(Problem("layer", digest, "its blob is " + ("corrupt" if _has(store, digest) else "missing")))
    snapshots = _check_snapshots(store, problems)
    if with_leftovers:
        for path in leftovers(store.root):
            what = "an interrupted unpack" if path.parent.name == "snapshots" else "left by a dead process"
            problems.append(Problem("leftover", str(path.relative_to(store.root)), what))
        from lamina.store.gc import stale_debug

        for path in stale_debug(store.root):
            problems.append(Problem("leftover", str(path.relative_to(store.root)),
                                    "a failed RUN kept for lamina debug whose layers or logs are gone"))
    problems += [Problem("database", "lamina.db", line) for line in store.db.integrity()]
    return Report(tuple(problems), count, blob_bytes, len(images), len(tags), len(records), snapshots)


def repair(store: Store, problems: Iterable[Problem]) -> list[str]:
    """Remove what each problem names; what was done, one line each (in the problems' order)."""
    done = []
    for p in problems:
        path = store.root / p.subject
        match p.kind:
            case "blob":
                remove(store.root / "blobs" / "sha256" / p.subject.removeprefix("sha256:"))
                done.append(f"removed blob {p.subject}")
            case "image":
                store.db.remove_image(p.subject)
                done.append(f"removed image {p.subject} (pull or build it again)")
            case "tag":
                store.db.remove_tag(p.subject)
                done.append(f"removed tag {p.shown or p.subject}")
            case "cache":
                store.db.cache_delete([p.subject])
                done.append(f"removed cache record {p.subject}")
            case "layer":
                store.db.remove_layers([p.subject])
                done.append(f"removed layer record {p.subject}")
            case "snapshot" | "leftover":
                remove(path)
                done.append(f"removed {p.subject}")
            case "layout":
                path.write_text(LAYOUT_FILE if p.subject == "oci-layout" else '{"schemaVersion":2,"manifests":[]}')
                done.append(f"rewrote {p.subject}")
            case "database":
                done.append(f"cannot repair the database ({p.detail}); restore lamina.db or start a new store")
    return done


# --- blobs ----------------------------------------------------------------------------------------


def _check_blobs(store: Store, problems: list[Problem], workers: int) -> tuple[set[str], int, int]:
    """Hash every blob; the digests of intact ones, their bytes, how many files there were."""
    directory = store.root / "blobs" / "sha256"
    entries = sorted(os.scandir(directory), key=lambda e: e.name) if directory.is_dir() else []
    names = [e for e in entries if _HEX64.match(e.name) and e.is_file(follow_symlinks=False)]
    valid = {e.name for e in names}
    problems += [Problem("blob", e.name, "not a blob (name or file type)") for e in entries if e.name not in valid]
    good, total = set(), 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for entry, (actual, size) in zip(names, pool.map(lambda e: _hash(e.path), names), strict=True):
            digest = f"sha256:{entry.name}"
            if actual is None:
                problems.append(Problem("blob", digest, "unreadable"))
            elif actual != entry.name:
                problems.append(Problem("blob", digest, f"content hashes to sha256:{actual}"))
            else:
                good.add(digest)
                total += size
    return good, total, len(names)


def _hash(path: str) -> tuple[str | None, int]:
    hasher, size = hashlib.sha256(), 0
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
    except OSError:
        return None, 0
    return hasher.hexdigest(), size


def _has(store: Store, digest: str) -> bool:
    return (store.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).exists()


# --- images, records, layout ----------------------------------------------------------------------


def _check_images(store: Store, rows: list[tuple[str, str, str, float]], good: set[str],
                  problems: list[Problem]) -> set[str]:
    """Report broken images; the manifest digests of the broken ones."""
    tagged: dict[str, list[str]] = {}
    for name, manifest in store.db.tags():
        tagged.setdefault(manifest, []).append(_familiar(name))
    broken = set()
    for manifest, config, _media_type, _created in rows:
        detail = _image_problem(store, manifest, config, good)
        if detail:
            names = f" ({', '.join(tagged[manifest])})" if manifest in tagged else ""
            problems.append(Problem("image", manifest, detail + names))
            broken.add(manifest)
    return broken


def _image_problem(store: Store, manifest: str, config: str, good: set[str]) -> str | None:
    def state(digest: str) -> str:
        return "corrupt" if _has(store, digest) else "missing"

    if manifest not in good:
        return f"manifest blob is {state(manifest)}"
    try:
        parsed = decode(store.blobs.read(Digest.parse(manifest)))
    except LaminaError as exc:
        return f"manifest does not parse: {exc}"
    if isinstance(parsed, Index):
        missing = [str(d.digest) for d in parsed.manifests if str(d.digest) not in good]
        return f"manifest {missing[0]} of the index is {state(missing[0])}" if missing else None
    assert isinstance(parsed, Manifest)
    if str(parsed.config.digest) != config:
        return f"recorded with config {config}, but its manifest names {parsed.config.digest}"
    if config not in good:
        return f"config blob {config} is {state(config)}"
    try:
        image_config = ImageConfig.decode(store.blobs.read(parsed.config.digest))
    except (LaminaError, ValueError) as exc:
        return f"config does not parse: {exc}"
    if len(image_config.diff_ids) != len(parsed.layers):
        return f"config lists {len(image_config.diff_ids)} layers, manifest {len(parsed.layers)}"
    for layer in parsed.layers:
        if str(layer.digest) not in good:
            return f"layer {layer.digest} is {state(str(layer.digest))}"
    return None


def _familiar(name: str) -> str:
    try:
        return Reference.parse(name).familiar
    except LaminaError:
        return name


def _record_problem(record: str, good: set[str]) -> str | None:
    try:
        doc = json.loads(record)
    except ValueError:
        return "not valid JSON"
    layer = doc.get("layer") if isinstance(doc, dict) else None
    if layer is None:
        return None
    digest = layer.get("digest") if isinstance(layer, dict) else None
    if not isinstance(digest, str):
        return "its layer has no digest"
    return None if digest in good else f"layer {digest} is missing or corrupt"


def _check_layout(root: Path) -> list[Problem]:
    found = []
    for name, key in (("oci-layout", "imageLayoutVersion"), ("index.json", "schemaVersion")):
        try:
            doc = json.loads((root / name).read_bytes())
            if not isinstance(doc, dict) or key not in doc:
                found.append(Problem("layout", name, f"has no {key}"))
        except FileNotFoundError:
            found.append(Problem("layout", name, "is missing"))
        except (OSError, ValueError):
            found.append(Problem("layout", name, "is not valid JSON"))
    return found


# --- snapshots ------------------------------------------------------------------------------------


def _check_snapshots(store: Store, problems: list[Problem]) -> int:
    """Entries that are neither a complete snapshot nor a temp dir (those are leftovers); the count."""
    count = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(store.snapshots_dir):
            if entry.name.startswith(".tmp-"):
                continue
            if _HEX64.match(entry.name) and entry.is_dir(follow_symlinks=False):
                count += 1
            else:
                problems.append(Problem("snapshot", f"snapshots/{entry.name}", "not a snapshot (name or file type)"))
    return count
