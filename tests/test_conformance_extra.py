"""A second corpus of Docker conformance cases (tests/conformance_extra), run like the first.

The cases were written for behaviours the published corpus in
../shared/conformance leaves out (one per gap in its numbering, plus grouped
interaction cases numbered from 201) and recorded from a real Docker 20.10
BuildKit daemon with tests/conformance_extra/record.py. They are checked by
the same check.py: it finds its cases next to itself, so it runs here from a
scratch folder holding links to check.py, the base image and these cases.

Every case must pass except those in KNOWN_FAILURES, each with the reason
(strict: a case that starts passing must be removed from the list).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.conformance import CONFORMANCE, judge, run_check

CASES = Path(__file__).resolve().parent / "conformance_extra" / "cases"

KNOWN_FAILURES: dict[str, str] = {
    "141-add-tar-zstd": "lamina extracts zstd tars in ADD, as Docker 23+ does; Docker 20.10 copies the file",
    "144-run-mount-bind-cache-tmpfs": "lamina removes empty RUN --mount target stubs, as current BuildKit "
                                      "does; BuildKit 20.10 leaves the directories in the layer",
}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (CONFORMANCE / "check.py").exists(), reason="no ../shared/conformance"),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    root = tmp_path_factory.mktemp("store")
    work = tmp_path_factory.mktemp("cases")
    harness = tmp_path_factory.mktemp("harness")
    for name, target in (("check.py", CONFORMANCE / "check.py"), ("base", CONFORMANCE / "base"), ("cases", CASES)):
        (harness / name).symlink_to(target)
    return run_check(harness / "check.py", root, work, "--tag-prefix", "extra-")


def _cases() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if p.is_dir()) if CASES.exists() else []


@pytest.mark.parametrize("case", _cases())
def test_case(results: dict[str, dict[str, object]], case: str) -> None:
    result = results[case]
    judge(result, case, KNOWN_FAILURES)
    assert "warning" not in result, f"{case}: {result['warning']} (re-record it with record.py)"


def test_every_case_is_recorded() -> None:
    for case in _cases():
        toml = (CASES / case / "case.toml").read_text()
        wanted = "expected.json" if 'oracle = "expected"' in toml else "expected-view.json"
        assert (CASES / case / wanted).exists(), f"{case} has no {wanted}"
