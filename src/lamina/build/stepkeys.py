"""What identifies a step (for its cache key) and how history names it.

Both are pure functions of an *expanded* instruction: the canonical form
drops what does not change the result (line numbers, original spelling).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

from lamina.dockerfile import instructions as ins
from lamina.dockerfile.parser import Heredoc, Node
from lamina.oci.config import ContainerConfig
from lamina.store.db import Metadata

_SKIP = frozenset({"line", "original"})


def _plain(value: Any) -> Any:
    if isinstance(value, Node):
        return value.original
    if isinstance(value, Heredoc):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def canonical_instruction(instr: ins.Instruction) -> dict[str, Any]:
    """The instruction as a JSON-able dict: its kind and its (expanded) fields."""
    out: dict[str, Any] = {"kind": type(instr).__name__.upper()}
    for f in dataclasses.fields(instr):
        if f.name not in _SKIP:
            out[f.name] = _plain(getattr(instr, f.name))
    return out


def _pairs(pairs: tuple[tuple[str, str | None], ...]) -> str:
    return " ".join(k if v is None else f"{k}={v}" for k, v in pairs)


def history_text(instr: ins.Instruction, config: ContainerConfig, run_args: tuple[str, ...] = ()) -> str:
    """``created_by`` for a history entry: the instruction, expanded and normalized."""
    match instr:
        case ins.Run():
            shown = json.dumps(list(run_args)) if instr.json else " ".join(run_args)
            return f"RUN {shown}"
        case ins.Copy() | ins.Add():
            word = "COPY" if isinstance(instr, ins.Copy) else "ADD"
            flags = " ".join(f"--{n}={v}" for n, v in (("from", instr.from_), ("chown", instr.chown),
                                                        ("chmod", instr.chmod)) if v)
            srcs = [*instr.sources, *(f"<<{h.name}" for h in instr.heredocs)]
            return " ".join(p for p in (word, flags, *srcs, instr.dest) if p)
        case ins.Env() | ins.Label():
            return f"{type(instr).__name__.upper()} {_pairs(instr.pairs)}"
        case ins.Arg():
            return f"ARG {_pairs(instr.pairs)}"
        case ins.Cmd():
            return f"CMD {json.dumps(list(config.cmd))}"
        case ins.Entrypoint():
            return f"ENTRYPOINT {json.dumps(list(config.entrypoint))}"
        case ins.Expose():
            return "EXPOSE " + " ".join(instr.ports)
        case ins.Volume():
            return f"VOLUME {json.dumps(list(instr.paths))}"
        case ins.User():
            return f"USER {instr.user}"
        case ins.Workdir():
            return f"WORKDIR {config.working_dir}"
        case ins.StopSignal():
            return f"STOPSIGNAL {instr.signal}"
        case ins.Maintainer():
            return f"MAINTAINER {instr.name}"
        case ins.Shell():
            return f"SHELL {json.dumps(list(instr.command))}"
        case ins.Onbuild():
            return f"ONBUILD {instr.expression}"
        case ins.Healthcheck():
            return "HEALTHCHECK " + ("NONE" if instr.test is None else json.dumps(list(instr.test)))
        case ins.From():
            return f"FROM {instr.image}"
    return instr.original


class StatCacheAdapter:
    """The context's stat cache protocol over SQLite: reads go straight, writes are batched."""

    def __init__(self, db: Metadata) -> None:
        self._db = db
        self._pending: list[tuple[str, int, int, int, int, str]] = []

    def get(self, path: str, size: int, ctime_ns: int, ino: int, mode: int) -> str | None:
        return self._db.stat_get(path, size, ctime_ns, ino, mode)

    def put(self, path: str, size: int, ctime_ns: int, ino: int, mode: int, digest: str) -> None:
        self._pending.append((path, size, ctime_ns, ino, mode, digest))

    def flush(self) -> None:
        if self._pending:
            self._db.stat_put_many(self._pending)
            self._pending = []


class PrefetchedStatCache(StatCacheAdapter):
    """The stat cache with the context's rows read in one query at the first lookup.

    A fully cached build of a 2,000-file context then makes one SELECT instead
    of 2,000. Paths outside the context (none today) still go to the database.
    The context is made absolute first, so ``lamina build .`` has a prefix too.
    """

    def __init__(self, db: Metadata, context: Path) -> None:
        super().__init__(db)
        self._db_ = db
        self._prefix = str(context / "x")[:-1]  # how the context's file paths start
        self._rows: dict[str, tuple[int, int, int, int, str]] | None = None
        self._rows_lock = threading.Lock()

    def get(self, path: str, size: int, ctime_ns: int, ino: int, mode: int) -> str | None:
        if not self._prefix or not path.startswith(self._prefix):  # "." gives relative paths: no prefix
            return super().get(path, size, ctime_ns, ino, mode)
        with self._rows_lock:
            if self._rows is None:
                self._rows = self._db_.stat_under(self._prefix)
            row = self._rows.get(path)
        return row[4] if row is not None and row[:4] == (size, ctime_ns, ino, mode) else None

    def put(self, path: str, size: int, ctime_ns: int, ino: int, mode: int, digest: str) -> None:
        with self._rows_lock:
            super().put(path, size, ctime_ns, ino, mode, digest)
            if self._rows is not None:
                self._rows[path] = (size, ctime_ns, ino, mode, digest)

    def flush(self) -> None:
        with self._rows_lock:  # stages flush at their ends, maybe at once
            pending, self._pending = self._pending, []
        if pending:
            self._db_.stat_put_many(pending)


