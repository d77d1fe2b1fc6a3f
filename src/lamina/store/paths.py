"""Where a store lives: small enough for the paths that must not load the store itself."""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    """``$LAMINA_ROOT``, else ``/var/lib/lamina`` for root, else the XDG data dir."""
    env = os.environ.get("LAMINA_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/lamina")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "lamina"


__all__ = ["default_root"]
