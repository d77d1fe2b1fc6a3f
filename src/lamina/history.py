"""An image's history as rows, newest first, pairing each entry with its layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamina.store.store import Store, StoredImage


@dataclass(frozen=True, slots=True)
class HistoryRow:
    image: str           # the image ID for the top row, else the layer digest, else "<missing>"
    created: str | None
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    layer: str | None

    @property
    def short_image(self) -> str:
        return self.image.removeprefix("sha256:")[:12] if self.image.startswith("sha256:") else self.image

    def to_json(self) -> dict[str, Any]:
        return {"id": self.image, "created": self.created, "created_by": self.created_by, "size": self.size,
                "comment": self.comment, "empty_layer": self.empty_layer, "layer": self.layer}


def image_history(store: Store, stored: StoredImage) -> list[HistoryRow]:
    cfg = stored.image.config
    layers = list(stored.image.layers)
    rows: list[HistoryRow] = []
    for entry in cfg.history:
        layer = None
        size = 0
        if not entry.empty_layer and layers:
            lay = layers.pop(0)
            layer = str(lay.digest)
            known = store.db.diff_size(layer)
            size = known if known is not None else lay.size
        rows.append(HistoryRow(layer or "<missing>", entry.created, entry.created_by, size, entry.comment,
                               entry.empty_layer, layer))
    rows.reverse()
    if rows:
        top = rows[0]
        rows[0] = HistoryRow(str(stored.id), top.created, top.created_by, top.size, top.comment,
                             top.empty_layer, top.layer)
    return rows
