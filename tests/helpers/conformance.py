"""Running a conformance corpus (check.py and its cases) against the lamina CLI, and judging a case.

Both corpora — ../shared/conformance and tests/conformance_extra — are driven
the same way: check.py loads the base image, builds each case with ``lamina
build`` and exports it with ``lamina save``, then compares with what Docker
produced. A case must pass unless it is a known failure, which must not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"


def run_check(check_py: Path, root: Path, work: Path, *extra: str) -> dict[str, dict[str, object]]:
    """check.py's result per case, with the store at ``root`` and scratch files in ``work``."""
    out = work / "results.json"
    lamina = f"{sys.executable} -m lamina --root {root}"
    cmd = [sys.executable, str(check_py), "--jobs", "2", "--json", str(out), "--workdir", str(work), *extra,
           "--setup", f"{lamina} load -i {{base}}/busybox.tar",
           "--build", f"{lamina} build -t {{tag}} -f {{dockerfile}} {{buildargs}} {{target}} {{context}}",
           "--export", f"{lamina} save -o {{out}} {{tag}}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    data = json.loads(out.read_text())
    return {c["case"]: c for c in data["results"]}


def judge(result: Mapping[str, object], case: str, known_failures: Mapping[str, str]) -> None:
    """Fail unless ``case`` passed; a known failure must still fail (then it is an xfail)."""
    passed = result.get("status") == "PASS"
    if case in known_failures:
        assert not passed, f"{case} passes now: remove it from KNOWN_FAILURES"
        pytest.xfail(known_failures[case])
    assert passed, json.dumps(result, indent=1)[:3000]
