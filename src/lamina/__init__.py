"""lamina: a daemonless, Docker-compatible container image builder.

The public Python API lives in :mod:`lamina.api` (``build``, ``pull``,
``push``, ``history``, ``tag``, ``save``, ``load``, ``run``); it is imported
lazily so that ``import lamina`` stays cheap for the CLI.
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"

if sys.flags.no_site:  # started by the `lamina` launcher (python -S): see lamina.launcher
    from lamina.launcher import add_site_packages

    add_site_packages()
