"""Whole-build memos: an unchanged rebuild answered in milliseconds, without parsing or the cache walk.

A fully cached build still costs what Python spends importing the Dockerfile
model, the image model and the builder, then parsing, hashing the context and
looking up every step. After each successful build lamina also records its
*inputs as the filesystem shows them*: the ``lstat`` signature (mode, size,
mtime, ctime, inode, device) of the Dockerfile, the ignore files and every
context path that selecting and hashing COPY/ADD sources read (directories
included: a new file changes its directory's mtime), the local tags its bases
were resolved through, and the cache records its steps reached. A later build
with the same options (:func:`memo_key`) whose inputs all still look the same
is that build again: the result is the recorded image, and the output is what
a fully cached build prints (``Using cache`` for every step that looked itself
up in the cache, see :meth:`MemoRecorder.keyed`), replayed as events.

Sound by construction rather than by heuristics: any change to a watched path
changes its ctime, which no one can set; a memo is not written when a watched
path changed less than :data:`RACY_NS` before the build started (a write in the
same timestamp tick as the read could otherwise go unseen, git's "racy clean"
case). Builds that depend on more
than files and tags never get a memo: ``--no-cache-filter``, ``--pull``,
``--cache-from/--cache-to``, a Dockerfile on stdin, ADD of URLs or Git, a base
named by ID prefix. Memos are a shortcut only: losing them costs one slow build.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.build import events

if TYPE_CHECKING:
    from lamina.build.options import BuildOptions
    from lamina.store.db import Metadata

FORMAT = 1
# a watched path changed this close to the build's start: no memo (see above). A second and a bit:
# the ctime of a write after the read is at least the start rounded down to the filesystem's
# granularity, which is a second on some (ext3), nanoseconds on most.
RACY_NS = 1_100_000_000
_REPLAYED = (events.StepStarted, events.StepDone, events.Warning_, events.BuildDone)

Signature = tuple[int, int, int, int, int, int] | None
_FULL_ID = re.compile(r"^(?:sha256:)?[a-f0-9]{64}$")


def memo_key(options: BuildOptions, version: str) -> str | None:
    """The key of the memo of ``options``' normal build, from everything it was asked; None when none may be.

    ``--no-cache`` is left out: such a build records the memo of the normal build that follows
    it, which gives the same image (see ``StageRun._rerun_key``), and it never uses one.
    """
    if (options.no_cache_filter or options.pull or options.dockerfile_text is not None
            or options.cache_from or options.cache_to):
        return None
    context = os.path.realpath(options.context)
    dockerfile = os.path.realpath(options.dockerfile or os.path.join(context, "Dockerfile"))
    doc = {
        "format": FORMAT, "lamina": version, "code": code_stamp(), "context": context, "dockerfile": dockerfile,
        "tags": list(options.tags), "args": sorted(options.build_args.items()), "target": options.target,
        "labels": sorted(options.labels.items()), "network": options.network, "platform": options.platform,
        "timestamp": options.timestamp, "compression": options.compression, "oci": options.oci,
        "secrets": sorted((k, str(v)) for k, v in options.secrets.items()),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))  # the text itself: hashing would load OpenSSL


@functools.cache
def code_stamp() -> int:
    """The newest mtime of lamina's own modules: a memo made by other code (a checkout being
    worked on, an upgrade that kept the version) is not this code's answer. ~1 ms, once a process
    (the CLI's memo lookup and a build that misses both need it)."""
    newest = 0
    for folder, dirs, files in os.walk(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
    return newest


def signature(path: str) -> Signature:
    """What ``lstat`` says of ``path``, or None when it does not exist."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class MemoRecorder:
    """Collects, during one build, what its memo must watch; :meth:`write` stores it at the end."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.started_ns = time.time_ns()
        self.seen: set[str] = set()
        self.bases: list[list[str]] = []
        # [stage, number, total, text, image id, looked itself up] as steps start; ONBUILD triggers
        # share their FROM's number
        self.steps: list[list[Any]] = []
        self.warnings: list[str] = []
        self.reason = ""  # why this build gets no memo, once something rules it out
        self._lock = threading.Lock()  # stages on threads report their steps

    def refuse(self, reason: str) -> None:
        self.reason = self.reason or reason

    def watch(self, paths: Iterable[str | Path]) -> None:
        self.seen.update(str(p) for p in paths)

    def base(self, tag: str | None, manifest: str) -> None:
        """A FROM/COPY --from image found through local tag ``tag`` (None: named by digest, immutable)."""
        self.bases.append(["tag", tag, manifest] if tag is not None else ["image", manifest])

    def resolved(self, name: str, manifest: str, db: Metadata) -> None:
        """``name`` was found as ``manifest``: how a later build can tell it still is (its local tag;
        nothing for a digest). A name found by an image-ID prefix or a repository digest gets no memo."""
        from lamina.errors import ReferenceError_
        from lamina.oci.reference import Reference

        if _FULL_ID.match(name):
            self.base(None, manifest)
            return
        try:
            ref: Reference | None = Reference.parse(name)
        except ReferenceError_:
            ref = None
        if ref is not None and ref.digest is not None:
            if db.image(str(ref.digest)) is None:  # an index's digest, mapped through repo_digests
                self.refuse(f"{name} came through a repository digest")
            else:
                self.base(None, manifest)
        elif ref is not None and db.tag(str(ref)) == manifest:
            self.base(str(ref), manifest)
        else:
            self.refuse(f"{name} was found by an image ID prefix")

    def observe(self, event: events.Event) -> None:
        with self._lock:
            self._observe(event)

    def _observe(self, event: events.Event) -> None:
        if isinstance(event, events.StepStarted):
            self.steps.append([event.stage, event.number, event.total, event.text, "", False])
        elif isinstance(event, events.StepDone):
            for step in reversed(self.steps):  # a stage's steps run one after another
                if step[0] == event.stage and step[1] == event.number:
                    step[4] = event.image_id
                    break
        elif isinstance(event, events.Warning_):
            self.warnings.append(event.message)

    def keyed(self, stage: str, number: int) -> None:
        """The running step of ``stage`` looked itself up in the cache: a rebuild finds it there
        (FROM and ONBUILD never look, and a fully cached build does not call them cached)."""
        with self._lock:
            for step in reversed(self.steps):
                if step[0] == stage and step[1] == number:
                    step[5] = True
                    break

    def write(self, db: Metadata, *, manifest: str, image_id: str, short_id: str, tags: Sequence[str],
              tag_names: Sequence[str], cache_keys: Iterable[str]) -> bool:
        """Store the memo unless something ruled it out or a watched path changed too recently.

        ``tags`` as the build showed them, ``tag_names`` as the tags table spells them.
        """
        if self.reason:
            return False
        watched = {path: signature(path) for path in sorted(self.seen)}
        newest = max((max(s[2], s[3]) for s in watched.values() if s is not None), default=0)
        if newest >= self.started_ns - RACY_NS:
            return False
        replay: list[list[Any]] = []
        cached = 0
        for stage, number, total, text, shown, hit in sorted(self.steps, key=lambda step: step[1]):  # stable
            replay.append(["StepStarted", {"stage": stage, "number": number, "total": total, "text": text}])
            cached += hit
            if hit:
                replay.append(["StepCached", {"stage": stage, "number": number}])
            replay.append(["StepDone", {"stage": stage, "number": number, "image_id": shown, "seconds": 0.0,
                                        "cached": hit}])
        replay += [["Warning_", {"message": m}] for m in self.warnings]
        replay.append(["BuildDone", {"image_id": short_id, "tags": list(tags), "cached_steps": cached,
                                     "total_steps": self.steps[0][2] if self.steps else 0, "seconds": 0.0}])
        record = {"format": FORMAT, "manifest": manifest, "image": image_id, "tags": list(tag_names),
                  "files": list(watched.items()),
                  "bases": self.bases, "keys": sorted(set(cache_keys)), "events": replay}
        db.memo_put(self.key, json.dumps(record, separators=(",", ":")))
        return True


def recall(db: Metadata, key: str) -> dict[str, Any] | None:
    """The memo under ``key`` if every input it watched is unchanged, else None.

    The image must still be in the store and under each of the build's tags
    (a tag moved since is the slow path's to set again).
    """
    raw = db.memo_get(key)
    if raw is None:
        return None
    try:
        memo = json.loads(raw)
        if memo.get("format") != FORMAT:
            return None
        for path, recorded in memo["files"]:
            now = signature(path)
            if (None if recorded is None else tuple(recorded)) != now:
                return None
        for base in memo["bases"]:
            if base[0] == "tag" and db.tag(base[1]) != base[2]:
                return None
            if base[0] == "image" and db.image(base[1]) is None:
                return None
        manifest = memo["manifest"]
        if db.image(manifest) is None or any(db.tag(name) != manifest for name in memo["tags"]):
            return None
        if not db.cache_all_present(memo["keys"]):
            return None
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    return memo  # type: ignore[no-any-return]


def replay(memo: Mapping[str, Any], listener: events.Listener, seconds: float) -> None:
    """Send the memo's events, as a fully cached build would have sent them."""
    for kind, doc in memo["events"]:
        cls = getattr(events, kind)
        values = {f.name: doc[f.name] for f in fields(cls)}
        if "tags" in values:
            values["tags"] = tuple(values["tags"])
        if cls is events.BuildDone:
            values["seconds"] = seconds
        listener(cls(**values))


__all__ = ["FORMAT", "MemoRecorder", "code_stamp", "memo_key", "recall", "replay", "signature"]
