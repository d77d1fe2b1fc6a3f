"""The lamina command as a user runs it, for the tests that drive the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def lamina(root: Path, *args: str, check: bool = True, code: int = 0, stdin: str | None = None,
           env: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``lamina --root ROOT ARGS…`` in a new process.

    With ``check``, an exit code other than ``code`` fails the test, and so does a Python traceback
    (lamina reports errors in one line). ``env`` adds to ``environ``, this process's environment
    unless given.
    """
    base = os.environ if environ is None else environ
    proc = subprocess.run([sys.executable, "-m", "lamina", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout, input=stdin, env={**base, **(env or {})})
    if check:
        if proc.returncode != code:
            raise AssertionError(f"lamina {' '.join(args)} exited {proc.returncode}, not {code}: "
                                 f"{proc.stderr}{proc.stdout[-2000:]}")
        assert "Traceback (most recent call last)" not in proc.stderr, proc.stderr
    return proc
