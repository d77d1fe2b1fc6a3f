"""Immutable image values and the pure functions that derive one image from another."""

from lamina.image.image import (
    Image,
    Layer,
    add_history,
    append_layer,
    scratch,
    with_container_config,
    with_created,
)

__all__ = ["Image", "Layer", "add_history", "append_layer", "scratch", "with_container_config", "with_created"]
