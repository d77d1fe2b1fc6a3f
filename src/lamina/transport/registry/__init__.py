"""The OCI distribution API: pull images from, and push them to, a registry.

``pull`` and ``push`` move images between a registry and the local store;
:class:`RegistryClient` is the HTTP session they share (auth, TLS, retries,
redirects), with credentials from the docker config
(:mod:`lamina.transport.credentials`). Progress is reported as events
(:mod:`.events`), never printed. HTTP is :mod:`lamina.transport.http`
(our HTTP/1.1 over plain sockets), imported only when a command talks to a
registry or fetches a URL.

The names below load on first use: ``lamina push`` imports neither the pull
side nor the layer-size counter that pulls need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina.transport.registry.client import RegistryClient
    from lamina.transport.registry.events import BlobProgress, Event, Progress, Resolved
    from lamina.transport.registry.pull import pull
    from lamina.transport.registry.push import PushResult, push

_WHERE = {
    "RegistryClient": "client", "BlobProgress": "events", "Event": "events", "Progress": "events",
    "Resolved": "events", "pull": "pull", "PushResult": "push", "push": "push",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"lamina.transport.registry.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'lamina.transport.registry' has no attribute {name!r}")


__all__ = ["BlobProgress", "Event", "Progress", "PushResult", "RegistryClient", "Resolved", "pull", "push"]
