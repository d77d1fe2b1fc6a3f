"""An image's history as rows, newest first, pairing each entry with its layer and how it was made.

What docker reads of an image (``created_by``, ``comment`` in the config's
history) stays exactly what the build wrote. How long a step took and whether
it came from the cache are *not* put in the config, not even in ``comment``:
both change from one build of the same Dockerfile and context to the next
(a duration always, "cached" with the state of the cache), so they would make
the image digest depend on the machine and the moment, and break
reproducible builds (``SOURCE_DATE_EPOCH``) and cache sharing. The store
keeps them instead, per image ID and history position (``image_steps`` in
:mod:`lamina.store.db`), written by the last build that produced the image;
images pulled or loaded have none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from lamina.errors import LaminaError
from lamina.model import model
from lamina.store.store import Store, StoredImage

_ARGS_PREFIX = re.compile(r"^\|\d+ (?:\S+=\S* )*")  # the classic builder's "|2 A=1 B=2 " before a RUN
_GO_MAP = re.compile(r"\bmap\[([^\]]*)\]")
_FIELD = re.compile(r"\{\{\s*(json\s+)?\.(\w*)\s*\}\}")


@model
class HistoryRow:
    image: str           # the image ID for the top row, else the layer digest, else "<missing>"
    created: str | None
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    layer: str | None
    seconds: float | None = None
    """How long the step ran when it last really ran (also for a cached step); None when unknown."""
    cached: bool | None = None
    """Whether the last build of this image took the step from the cache; None when unknown."""
    build: str = ""

    @property
    def short_image(self) -> str:
        return self.image.removeprefix("sha256:")[:12] if self.image.startswith("sha256:") else self.image

    @property
    def instruction(self) -> str:
        return normalize(self.created_by)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.image, "created": self.created, "created_by": self.created_by, "size": self.size,
                "comment": self.comment, "empty_layer": self.empty_layer, "layer": self.layer,
                "instruction": self.instruction, "seconds": self.seconds, "cached": self.cached,
                "build": self.build or None}


def normalize(created_by: str) -> str:
    """One spelling for history entries written by docker's classic builder, BuildKit and lamina.

    ``/bin/sh -c #(nop)  CMD ["sh"]`` → ``CMD ["sh"]``; ``|1 V=2 /bin/sh -c make``
    → ``RUN /bin/sh -c make``; the ``# buildkit`` suffix goes; Go's map syntax
    (``LABEL map[a:b]``) becomes ``LABEL a=b``.
    """
    text = created_by.strip().removesuffix("# buildkit").rstrip()
    text = _ARGS_PREFIX.sub("", text)
    if text.startswith("/bin/sh -c #(nop)"):
        text = text.removeprefix("/bin/sh -c #(nop)").strip()
    elif text.startswith("/bin/sh -c "):
        text = "RUN " + text
    return _GO_MAP.sub(lambda m: " ".join(_map_item(i) for i in m.group(1).split()), text)


def _map_item(item: str) -> str:
    key, sep, value = item.partition(":")
    return f"{key}={value}" if sep else item


def image_history(store: Store, stored: StoredImage) -> list[HistoryRow]:
    cfg = stored.image.config
    layers = list(stored.image.layers)
    made = store.db.image_steps(str(stored.id))
    rows: list[HistoryRow] = []
    for position, entry in enumerate(cfg.history):
        layer = None
        size = 0
        if not entry.empty_layer and layers:
            lay = layers.pop(0)
            layer = str(lay.digest)
            size = store.layer_size(lay)  # docker's uncompressed size
        seconds, cached, build = made.get(position, (None, None, ""))
        rows.append(HistoryRow(layer or "<missing>", entry.created, entry.created_by, size, entry.comment,
                               entry.empty_layer, layer, seconds, cached, build))
    rows.reverse()
    if rows:
        top = rows[0]
        rows[0] = HistoryRow(str(stored.id), top.created, top.created_by, top.size, top.comment,
                             top.empty_layer, top.layer, top.seconds, top.cached, top.build)
    return rows


def duration(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``2m05s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds + 0.5), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def cached_text(cached: bool | None) -> str:
    return "-" if cached is None else ("yes" if cached else "no")


# docker's --format '{{.Field}}' for history, plus lamina's Duration, Cached, Instruction and Layer
HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
           "Size": "SIZE", "Comment": "COMMENT", "Duration": "DURATION", "Cached": "CACHED",
           "Instruction": "INSTRUCTION", "Layer": "LAYER"}


def template_fields(row: HistoryRow, *, human: bool, no_trunc: bool,
                    since: Callable[[str | None], str], size: Callable[[int], str]) -> dict[str, str]:
    """A row's values by docker's template field names (``since``/``size`` format for humans)."""
    created_by = row.instruction
    if not no_trunc:
        created_by = truncate(created_by.replace("\n", " "))
    return {"ID": row.image if no_trunc else row.short_image,
            "CreatedSince": since(row.created) if human else (row.created or ""),
            "CreatedAt": row.created or "", "CreatedBy": created_by,
            "Size": size(row.size) if human else str(row.size), "Comment": row.comment,
            "Duration": duration(row.seconds) if human else ("" if row.seconds is None else f"{row.seconds:.3f}"),
            "Cached": cached_text(row.cached), "Instruction": row.instruction, "Layer": row.layer or ""}


def truncate(text: str, width: int = 45) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_template(template: str, fields: dict[str, str]) -> str:
    """Fill ``{{.Field}}`` (and ``{{json .}}``) as docker's Go templates do for these fields; ``\\t`` is a tab."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if not name:
            return json.dumps(fields, sort_keys=True) if match.group(1) else " ".join(fields.values())
        if name not in fields:
            raise LaminaError(f"template: can't evaluate field {name} (fields: {', '.join(fields)})")
        value = fields[name]
        return json.dumps(value) if match.group(1) else value
    return _FIELD.sub(fill, template.replace("\\t", "\t"))


def template_header(template: str) -> str:
    """The header line of ``table {{...}}``: each field's column title."""
    def title(match: re.Match[str]) -> str:
        return HEADERS.get(match.group(2), match.group(2).upper())
    return _FIELD.sub(title, template.replace("\\t", "\t"))
