"""The local content-addressed store: blobs in an OCI layout, metadata in SQLite.

The names below load on first use, so ``lamina.store.db`` (all a memoized
rebuild reads) comes without the image model that ``lamina.store.store`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina.store.blobs import BlobStore, BlobWriter
    from lamina.store.db import Metadata
    from lamina.store.paths import default_root
    from lamina.store.store import Store, StoredImage

_WHERE = {"BlobStore": "blobs", "BlobWriter": "blobs", "Metadata": "db",
          "Store": "store", "StoredImage": "store", "default_root": "paths"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"lamina.store.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'lamina.store' has no attribute {name!r}")


__all__ = ["BlobStore", "BlobWriter", "Metadata", "Store", "StoredImage", "default_root"]
