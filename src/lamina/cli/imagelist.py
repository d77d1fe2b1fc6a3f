"""``lamina images``: the rows docker lists, its ``--filter`` keys and its reference patterns.

A row is one (image, tag) pair, or the image alone when no tag names it
(``<none>``: docker calls those *dangling*). Rows are dicts keyed by docker's
``--format`` field names, newest image first. Filters of different keys must
all hold; several values of one key (``reference``, ``label``) are
alternatives, as in docker.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lamina.cli.format import ago, human_size, parse_time
from lamina.errors import LaminaError
from lamina.model import model
from lamina.oci.reference import Reference

FILTER_KEYS = ("dangling", "reference", "label", "before", "since")


@model
class Filters:
    """Parsed ``--filter`` values; empty tuples and None mean "no condition"."""

    dangling: bool | None = None
    references: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    before: str | None = None
    since: str | None = None


def parse_filters(items: Sequence[str]) -> Filters:
    """``KEY=VALUE`` strings → :class:`Filters`; an unknown key or bad value is an error, as in docker."""
    values: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in FILTER_KEYS:
            raise LaminaError(f"invalid filter {item!r} (expected one of: {', '.join(k + '=…' for k in FILTER_KEYS)})")
        values.setdefault(key, []).append(value)
    dangling = None
    for value in values.get("dangling", []):
        if value.lower() not in ("true", "false", "1", "0"):
            raise LaminaError(f"invalid filter 'dangling={value}': expected true or false")
        dangling = value.lower() in ("true", "1")
    for key in ("before", "since"):
        if len(values.get(key, [])) > 1:
            raise LaminaError(f"filter {key!r} takes one image")
    before, since = values.get("before", []), values.get("since", [])
    return Filters(dangling, tuple(values.get("reference", [])), tuple(values.get("label", [])),
                   before[0] if before else None, since[0] if since else None)


def reference_matches(pattern: str, ref: Reference) -> bool:
    """docker's reference filter: ``pattern`` (a shell pattern where ``*`` stops at ``/``) against
    the familiar ``name:tag``, else the familiar name alone."""
    regex = _glob(pattern)
    tagged = f"{ref.familiar_repository}:{ref.tag}" if ref.tag else ref.familiar
    return bool(regex.fullmatch(tagged) or regex.fullmatch(ref.familiar_repository))


def _glob(pattern: str) -> re.Pattern[str]:
    """Go's path.Match syntax as a regex: ``*``, ``?``, ``[...]`` (``[^...]`` negates), ``\\`` escapes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 2 if pattern[i + 1:i + 2] in ("^", "]") else i + 1)
            body = pattern[i + 1:end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise LaminaError(f"invalid reference pattern {pattern!r}: {exc}") from None


def _label_matches(wanted: str, labels: dict[str, str]) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


def image_rows(store: Any, filters: Filters, *, no_trunc: bool = False) -> list[dict[str, Any]]:
    """The rows ``lamina images`` shows, newest image first, filtered."""
    from lamina.oci.digest import Digest

    tagged: dict[str, list[Reference]] = {}
    for name, manifest in store.db.tags():
        tagged.setdefault(manifest, []).append(Reference.parse(name))
    bounds = {key: _created(store, name) for key, name in (("before", filters.before), ("since", filters.since))
              if name is not None}
    rows: list[dict[str, Any]] = []
    for manifest, _config, _media_type, _stored_at in sorted(store.db.images(), key=lambda r: -r[3]):
        stored = store.get(Digest.parse(manifest))
        config = stored.image.config
        created = parse_time(config.created) or 0.0
        if "before" in bounds and not created < bounds["before"]:
            continue
        if "since" in bounds and not created > bounds["since"]:
            continue
        if filters.labels and not any(_label_matches(w, dict(config.config.labels)) for w in filters.labels):
            continue
        refs: list[Reference | None] = list(tagged.get(manifest, [])) or [None]
        if filters.dangling is not None and (refs == [None]) != filters.dangling:
            continue
        if filters.references:
            refs = [r for r in refs if r is not None and any(reference_matches(p, r) for p in filters.references)]
        if not refs:
            continue
        size = human_size(sum(store.layer_size(layer) for layer in stored.image.layers))
        remote = dict(store.db.repo_digests(str(stored.id)))
        for ref in refs:
            digest = remote.get(ref.repository, str(stored.manifest_digest)) if ref else str(stored.manifest_digest)
            rows.append({
                "Containers": "N/A",
                "CreatedAt": _go_time(created) if config.created else "",
                "CreatedSince": ago(config.created),
                "Digest": digest,
                "ID": str(stored.id) if no_trunc else stored.id.short,
                "Repository": ref.familiar_repository if ref else "<none>",
                "SharedSize": "N/A",
                "Size": size,
                "Tag": (ref.tag or "<none>") if ref else "<none>",
                "UniqueSize": "N/A",
                "VirtualSize": size,
            })
    return rows


def _created(store: Any, name: str) -> float:
    stored = store.resolve(name)
    return parse_time(stored.image.config.created) or 0.0


def _go_time(epoch: float) -> str:
    """Go's ``time.Time.String()`` in local time, as docker prints CreatedAt."""
    return datetime.fromtimestamp(int(epoch)).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")


__all__ = ["FILTER_KEYS", "Filters", "image_rows", "parse_filters", "reference_matches"]
