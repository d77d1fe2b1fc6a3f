"""The local content-addressed store: blobs in an OCI layout, metadata in SQLite."""

from lamina.store.blobs import BlobStore, BlobWriter
from lamina.store.db import Metadata
from lamina.store.store import Store, StoredImage, default_root

__all__ = ["BlobStore", "BlobWriter", "Metadata", "Store", "StoredImage", "default_root"]
