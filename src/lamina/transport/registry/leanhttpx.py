"""httpx imported without the optional packages a synchronous command never uses.

When they are installed, ``import httpx`` pulls in its command-line tool (rich,
click, pygments) and httpcore pulls in trio and anyio for async code: 150-250 ms
of a ``lamina push`` that takes well under a second. Both packages treat these
imports as optional (``except ImportError``), and a ``None`` in ``sys.modules``
makes an import raise ImportError, so they are blocked for the length of this
one import and then unblocked: anything imported later, by anyone, imports them
normally. Imported first by :mod:`lamina.transport.registry`, before any of its
modules imports httpx; a no-op when httpx is already loaded.
"""

from __future__ import annotations

import sys

BLOCKED = ("trio", "anyio", "httpx._main")


def _import() -> None:
    if "httpx" in sys.modules and "httpcore" in sys.modules:
        return
    blocked = [name for name in BLOCKED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401  (httpx imports it only when a transport is made)
        import httpx  # noqa: F401
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


_import()
