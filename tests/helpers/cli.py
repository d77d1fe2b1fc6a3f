"""The lamina command as a user runs it, for the tests that drive the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def lamina(root: Path, *args: str, check: bool = True, stdin: str | None = None,
           env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``lamina --root ROOT ARGS…`` in a new process; with ``check``, a non-zero exit fails the test.

    ``env`` adds to (never replaces) this process's environment.
    """
    proc = subprocess.run([sys.executable, "-m", "lamina", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout, input=stdin, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"lamina {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout[-2000:]}")
    return proc
