"""Why a step missed the cache.

A cache key is a digest: it says *that* inputs changed, never *which*. So each
cache record also keeps the structured inputs of its key (:class:`StepInputs`:
parent key, step kind, the instruction as written and expanded, the ARG/ENV
values it used, per-file digests of COPY sources, the remaining key inputs).
On a miss the builder finds the most plausible earlier version of the step
(what this Dockerfile last built on the same parent, else at the same step
position; see ``cache_lineage`` in :mod:`lamina.store.db`) and :func:`reasons`
diffs the two. Everything here is pure except :class:`RecordingStatCache`,
which only remembers what the context checksum already computed, so a cache
hit costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.model import model

if TYPE_CHECKING:
    from lamina.build.context import Selected, StatCache

MAX_FILES_SHOWN = 5


@model
class StepInputs:
    """The structured inputs of one step's cache key, as kept in its cache record."""

    parent: str
    kind: str
    source: str
    """The instruction as written in the Dockerfile (before expansion)."""
    instruction: Any
    """The canonical expanded instruction (:func:`~lamina.build.stepkeys.canonical_instruction`)."""
    variables: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Name → (``"arg"`` or ``"env"``, value) for every variable the step used."""
    files: Mapping[str, tuple[str, str]] | None = None
    """COPY/ADD from the context: path → (content digest, ``dir`` or ``-> target``; octal mode)."""
    other: Mapping[str, Any] = field(default_factory=dict)
    """The rest of the key's inputs (workdir, user, network, a COPY --from source key...)."""

    def to_json(self) -> dict[str, Any]:
        return {"parent": self.parent, "kind": self.kind, "source": self.source, "instruction": self.instruction,
                "variables": {k: list(v) for k, v in self.variables.items()},
                "files": None if self.files is None else {k: list(v) for k, v in self.files.items()},
                "other": dict(self.other)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StepInputs:
        files = doc.get("files")
        return cls(str(doc["parent"]), str(doc["kind"]), str(doc.get("source", "")), doc.get("instruction"),
                   {k: (str(v[0]), str(v[1])) for k, v in doc.get("variables", {}).items()},
                   None if files is None else {k: (str(v[0]), str(v[1])) for k, v in files.items()},
                   dict(doc.get("other", {})))


def short(digest: str) -> str:
    """``sha256:1a2b3c4d…`` — enough to tell two digests apart in a sentence."""
    algo, sep, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:8]}…" if sep and len(hexpart) > 8 else digest


def reasons(now: StepInputs, before: StepInputs | None, *, parent: str) -> tuple[str, ...]:
    """Why ``now`` missed, compared with ``before`` (the earlier version of the step).

    ``parent`` describes the parent step for the sentence ``parent step 6
    rebuilt`` (the caller knows whether it ran in this build). The step's own
    changes come first: they are the ones a user acts on.
    """
    if before is None:
        return ("no previous build",)
    out: list[str] = []
    own_vars = _variables(now.variables, before.variables)
    if now.kind != before.kind or now.source != before.source:
        out.append("instruction changed")
    elif now.instruction != before.instruction and not own_vars:
        out.append("instruction changed after expansion")
    out += own_vars
    if now.files is not None or before.files is not None:
        out += _files(now.files or {}, before.files or {})
    out += _other(now.other, before.other)
    if now.parent != before.parent:
        if now.parent.startswith("base:") and before.parent.startswith("base:"):
            out.append(f"base image changed ({_base(before.parent)} → {_base(now.parent)})")
        else:
            out.append(parent)
    return tuple(out) or ("inputs changed",)


def _base(key: str) -> str:
    value = key.removeprefix("base:")
    return value if value == "scratch" else short(value)


def _variables(now: Mapping[str, tuple[str, str]], before: Mapping[str, tuple[str, str]]) -> list[str]:
    out = []
    for name in sorted(set(now) | set(before)):
        new, old = now.get(name), before.get(name)
        if new == old:
            continue
        what = "build arg" if (new or old or ("arg", ""))[0] == "arg" else "ENV"
        if new is None:
            out.append(f"{what} {name} no longer used")
        elif old is None:
            out.append(f"{what} {name} now used ({new[1]})")
        elif new[1] != old[1]:
            out.append(f"{what} {name} changed ({old[1]} → {new[1]})")
        else:
            out.append(f"{name} is now {'a build arg' if new[0] == 'arg' else 'an ENV'}")
    return out


def _files(now: Mapping[str, tuple[str, str]], before: Mapping[str, tuple[str, str]]) -> list[str]:
    out = []
    for path in sorted(set(now) | set(before)):
        new, old = now.get(path), before.get(path)
        if new == old:
            continue
        if old is None:
            out.append(f"{path} added")
        elif new is None:
            out.append(f"{path} removed")
        elif new[0] != old[0]:
            both = new[0].startswith("sha256:") and old[0].startswith("sha256:")
            change = f"{short(old[0])} → {short(new[0])}" if both else f"{old[0]} → {new[0]}"
            out.append(f"{path} changed ({change})")
        else:
            out.append(f"{path} mode changed ({old[1]} → {new[1]})")
    if len(out) > MAX_FILES_SHOWN:
        out[MAX_FILES_SHOWN:] = [f"and {len(out) - MAX_FILES_SHOWN} more files"]
    return out


def _other(now: Mapping[str, Any], before: Mapping[str, Any]) -> list[str]:
    out = []
    for name in sorted(set(now) | set(before)):
        new, old = now.get(name), before.get(name)
        if new == old:
            continue
        if name == "from":
            out.append("COPY --from source changed")
        elif isinstance(new, str | None) and isinstance(old, str | None):
            out.append(f"{name} changed ({old or '(none)'} → {new or '(none)'})")
        else:
            out.append(f"{name} changed")
    return out


def summary(found: Sequence[str], limit: int = 2) -> str:
    """The one short note normal build output shows for a miss."""
    shown = ", ".join(found[:limit])
    return shown + (f" (+{len(found) - limit} more)" if len(found) > limit else "")


def miss_line(number: int, total: int, text: str, found: Sequence[str]) -> str:
    """``step 7/12 COPY . /app: cache miss — src/app.py changed (…)`` (what --explain prints)."""
    return f"step {number}/{total} {' '.join(text.split())}: cache miss — {'; '.join(found)}"


# COPY sources ------------------------------------------------------------------------------------
class RecordingStatCache:
    """A stat cache that also remembers every digest the checksum asked for or computed."""

    def __init__(self, inner: StatCache | None) -> None:
        self._inner = inner
        self.seen: dict[str, str] = {}

    def get(self, path: str, size: int, ctime_ns: int, ino: int, mode: int) -> str | None:
        found = self._inner.get(path, size, ctime_ns, ino, mode) if self._inner is not None else None
        if found is not None:
            self.seen[path] = found
        return found

    def put(self, path: str, size: int, ctime_ns: int, ino: int, mode: int, digest: str) -> None:
        self.seen[path] = digest
        if self._inner is not None:
            self._inner.put(path, size, ctime_ns, ino, mode, digest)


def file_inputs(root: Path, selected: Sequence[Selected], seen: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Per-path content of the selected sources (``seen``: host path → digest, from the checksum)."""
    out: dict[str, tuple[str, str]] = {}
    for source in selected:
        for entry in source.entries:
            shown = "/".join(p for p in (source.relpath, entry.relpath) if p) or "."
            if entry.kind == "file":
                content = seen.get(str(root / source.real / entry.relpath), "file")
            elif entry.kind == "symlink":
                content = f"-> {entry.link_target}"
            else:
                content = entry.kind
            out[shown] = (content, f"{entry.mode:04o}")
    return out
