"""The OCI distribution API: pull images from, and push them to, a registry.

``pull`` and ``push`` move images between a registry and the local store;
:class:`RegistryClient` is the HTTP session they share (auth, TLS, retries,
redirects), with credentials from the docker config
(:mod:`lamina.transport.credentials`). Progress is reported as events
(:mod:`.events`), never printed. HTTP is :mod:`lamina.transport.http`
(the standard library's ``http.client``), imported only when a command
talks to a registry or fetches a URL.
"""

from lamina.transport.registry.client import RegistryClient
from lamina.transport.registry.events import BlobProgress, Event, Progress, Resolved
from lamina.transport.registry.pull import pull
from lamina.transport.registry.push import PushResult, push

__all__ = ["BlobProgress", "Event", "Progress", "PushResult", "RegistryClient", "Resolved", "pull", "push"]
