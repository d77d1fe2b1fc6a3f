"""lamina: a daemonless, Docker-compatible container image builder.

The public Python API lives in :mod:`lamina.api` (``build``, ``pull``,
``push``, ``history``, ``tag``, ``save``, ``load``, ``run``); it is imported
lazily so that ``import lamina`` stays cheap for the CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"
