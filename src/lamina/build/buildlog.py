"""What a build leaves on disk for later: every step's full output, and a failed RUN's filesystem.

``STORE/logs/<build-id>/`` holds ``build.json`` (status, steps, error) and a
``<step>.log`` for each step that printed something or failed, written from
the build's events as they happen (so a killed build keeps its output;
nothing is clipped). A step that printed nothing (a cache hit, ENV) has its
few status lines in ``build.json`` instead, so a cached build writes one
file, not one per step. About the last :data:`KEEP_BUILDS` builds are kept
(pruned in batches, to keep a cached build fast). When a RUN fails, its upper dir (what
it wrote before failing) and what is needed to start the same process
again (lower snapshots, argv, env, user, workdir, network) go to
``STORE/debug/<build-id>/`` for ``lamina debug``; the last
:data:`KEEP_DEBUG` of those are kept, as upper dirs can be large.

Build IDs sort by time (``20261127-161000.123-3fa2c1``), so "the last build" is
the greatest name.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from lamina.build import events
from lamina.errors import BuildError
from lamina.model import model

KEEP_BUILDS = 20
KEEP_DEBUG = 5
_PRUNE_SLACK = 5  # prune logs only once this many builds over the limit


def new_build_id(now: float | None = None) -> str:
    """``20261127-161000.123-3fa2c1``: milliseconds, so builds of one second (cached ones) still sort."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}-{os.urandom(3).hex()}"  # not secrets: it loads OpenSSL


@model
class BuildInfo:
    """One build as ``build.json`` records it."""

    build_id: str
    path: Path
    status: str
    started: float
    steps: Mapping[int, str]
    failed_step: int | None
    error: str
    debug: bool
    notes: Mapping[int, str]
    """The status lines of steps that have no ``.log`` file."""

    @classmethod
    def read(cls, path: Path) -> BuildInfo:
        try:
            doc = json.loads((path / "build.json").read_text())
        except (OSError, ValueError):
            doc = {}
        return cls(path.name, path, str(doc.get("status", "unknown")), float(doc.get("started", 0.0)),
                   {int(k): str(v) for k, v in doc.get("steps", {}).items()}, doc.get("failed_step"),
                   str(doc.get("error", "")), (path.parent.parent / "debug" / path.name / "debug.json").exists(),
                   {int(k): str(v) for k, v in doc.get("notes", {}).items()})

    def step_numbers(self) -> list[int]:
        files = {int(p.stem) for p in self.path.glob("*.log") if p.stem.isdigit()}
        return sorted(files | set(self.notes))

    def step_output(self, number: int) -> bytes:
        """A step's log: its file, else its status lines."""
        try:
            return (self.path / f"{number}.log").read_bytes()
        except FileNotFoundError:
            return self.notes.get(number, "").encode()


def builds(store_root: Path) -> list[BuildInfo]:
    """The kept builds, newest first."""
    logs = store_root / "logs"
    if not logs.is_dir():
        return []
    return [BuildInfo.read(p) for p in sorted(logs.iterdir(), reverse=True) if p.is_dir()]


def find_build(store_root: Path, name: str | None = None) -> BuildInfo:
    """A build by ID or unique ID prefix; ``None`` means the last build."""
    found = builds(store_root)
    if name is not None:
        found = [b for b in found if b.build_id.startswith(name)]
        if len(found) > 1:
            raise BuildError(f"build ID {name!r} is ambiguous: {', '.join(b.build_id for b in found[:5])}")
    if not found:
        raise BuildError(f"no build {name!r} is kept" if name else "no build has been logged yet")
    return found[0]


class BuildLog:
    """Writes one build's logs from its events; :meth:`tee` puts it in front of a listener."""

    def __init__(self, store_root: Path, build_id: str | None = None, *, about: Mapping[str, Any] | None = None,
                 ) -> None:
        self.store_root = store_root
        self.build_id = build_id or new_build_id()
        self.path = store_root / "logs" / self.build_id
        self._doc: dict[str, Any] = {"id": self.build_id, "started": time.time(), "status": "running",
                                     "steps": {}, **(about or {})}
        self._files: dict[int, IO[bytes]] = {}
        self._notes: dict[int, list[str]] = {}
        self._current: int | None = None

    def tee(self, listener: events.Listener) -> events.Listener:
        def both(event: events.Event) -> None:
            self.record(event)
            listener(event)
        return both

    def record(self, event: events.Event) -> None:
        match event:
            case events.StepStarted():
                self._current = event.number
                self._doc["steps"][str(event.number)] = event.text
                self._line(event.number, f"Step {event.number}/{event.total} : {event.text}")
            case events.StepOutput():
                handle = self._file(event.number)
                handle.write(event.data)
                handle.flush()
            case events.StepCached():
                self._line(event.number, " ---> Using cache")
            case events.CacheMiss():
                self._line(event.number, " ---> Cache miss: " + "; ".join(event.reasons))
            case events.StepDone():
                note = " (cached)" if event.cached else ""
                self._line(event.number, f" ---> {event.image_id} in {event.seconds:.3f}s{note}")
            case _:
                pass

    def finish(self, error: BaseException | None = None, *, image: str | None = None) -> None:
        """Close the logs and record the outcome (``error`` is what stopped the build)."""
        if error is not None:
            message = str(error) or type(error).__name__  # KeyboardInterrupt has no message
            self._doc.update(status="failed", error=message, failed_step=self._current)
            if self._current is not None:
                self._file(self._current)
                self._line(self._current, f"Error: {message}")
        else:
            self._doc.update(status="succeeded", image=image)
        self._doc["finished"] = time.time()
        self._doc["notes"] = {str(n): "".join(f"{line}\n" for line in lines) for n, lines in self._notes.items()}
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        self._write_doc()
        logs = self.store_root / "logs"
        if sum(1 for _ in logs.iterdir()) > KEEP_BUILDS + _PRUNE_SLACK:
            for name in _prune(logs, KEEP_BUILDS, keep=self.build_id):  # a build no longer listed can't be debugged
                _rmtree(self.store_root / "debug" / name)

    def keep_failed(self, upper: Path, info: Mapping[str, Any]) -> Path:
        """Move a failed RUN's upper dir under ``STORE/debug/<build-id>/`` with ``info`` beside it."""
        debug = self.store_root / "debug"
        target = debug / self.build_id
        if target.exists():
            _rmtree(target, ignore_errors=False)
        target.mkdir(parents=True)
        os.rename(upper, target / "upper")
        _write_json(target / "debug.json", {"build": self.build_id, **info})
        _prune(debug, KEEP_DEBUG, keep=self.build_id)
        return target

    def _file(self, number: int) -> IO[bytes]:
        """The step's log file, created (with the lines noted so far) at its first output."""
        if number not in self._files:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / f"{number}.log", "ab")  # noqa: SIM115 - closed in finish
            handle.write("".join(f"{line}\n" for line in self._notes.pop(number, [])).encode("utf-8", "replace"))
            self._files[number] = handle
        return self._files[number]

    def _line(self, number: int, text: str) -> None:
        handle = self._files.get(number)
        if handle is None:
            self._notes.setdefault(number, []).append(text)
            return
        handle.write(text.encode("utf-8", "replace") + b"\n")
        handle.flush()

    def _write_doc(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.path / "build.json", self._doc)


def load_debug(store_root: Path, build_id: str) -> dict[str, Any]:
    """What :meth:`BuildLog.keep_failed` kept for ``build_id``; a BuildError when nothing was."""
    path = store_root / "debug" / build_id
    try:
        doc: dict[str, Any] = json.loads((path / "debug.json").read_text())
    except (OSError, ValueError):
        raise BuildError(f"build {build_id} kept no failed step to debug (only a failed RUN is kept, "
                         f"for the last {KEEP_DEBUG} such builds)") from None
    doc["upper"] = str(path / "upper")
    return doc


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)


def _prune(parent: Path, keep_count: int, *, keep: str) -> list[str]:
    """Remove all but the newest ``keep_count`` entries of ``parent`` (never ``keep``); the names removed."""
    if not parent.is_dir():
        return []
    names = sorted((p.name for p in parent.iterdir() if p.is_dir()), reverse=True)
    removed = [name for name in names[keep_count:] if name != keep]
    for name in removed:
        _rmtree(parent / name)
    return removed


def _rmtree(path: Path, *, ignore_errors: bool = True) -> None:
    import shutil  # only when there is something to remove: a cached build need not load it

    shutil.rmtree(path, ignore_errors=ignore_errors)
