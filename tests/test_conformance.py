"""The Docker conformance suite (../shared/conformance) run against the lamina CLI.

Every case must pass except those listed in KNOWN_FAILURES, each with the
reason; a case that starts passing must be removed from the list (strict), so
the list only ever shrinks.
"""

from __future__ import annotations

import os
import shutil

import pytest

from helpers.conformance import CONFORMANCE, judge, run_check

KNOWN_FAILURES: dict[str, str] = {}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (CONFORMANCE / "check.py").exists(), reason="no ../shared/conformance"),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    return run_check(CONFORMANCE / "check.py", tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("cases"))


def _cases() -> list[str]:
    if not (CONFORMANCE / "cases").exists():
        return []
    return sorted(p.name for p in (CONFORMANCE / "cases").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", _cases())
def test_case(results: dict[str, dict[str, object]], case: str) -> None:
    judge(results[case], case, KNOWN_FAILURES)
