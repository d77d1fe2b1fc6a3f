"""The Docker conformance suite (../shared/conformance) run against the lamina CLI.

Every case must pass except those listed in KNOWN_FAILURES, each with the
reason; a case that starts passing must be removed from the list (strict), so
the list only ever shrinks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"

KNOWN_FAILURES: dict[str, str] = {}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (CONFORMANCE / "check.py").exists(), reason="no ../shared/conformance"),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    root = tmp_path_factory.mktemp("store")
    work = tmp_path_factory.mktemp("cases")
    out = work / "results.json"
    lamina = f"{sys.executable} -m lamina --root {root}"
    cmd = [sys.executable, str(CONFORMANCE / "check.py"), "--jobs", "2", "--json", str(out),
           "--workdir", str(work),
           "--setup", f"{lamina} load -i {{base}}/busybox.tar",
           "--build", f"{lamina} build -t {{tag}} -f {{dockerfile}} {{buildargs}} {{target}} {{context}}",
           "--export", f"{lamina} save -o {{out}} {{tag}}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    data = json.loads(out.read_text())
    return {c["case"]: c for c in data["results"]}


def _cases() -> list[str]:
    if not (CONFORMANCE / "cases").exists():
        return []
    return sorted(p.name for p in (CONFORMANCE / "cases").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", _cases())
def test_case(results: dict[str, dict[str, object]], case: str) -> None:
    result = results[case]
    passed = result.get("status") == "PASS"
    if case in KNOWN_FAILURES:
        assert not passed, f"{case} passes now: remove it from KNOWN_FAILURES"
        pytest.xfail(KNOWN_FAILURES[case])
    assert passed, json.dumps(result, indent=1)[:3000]
