"""The benchmark's pure parts: deterministic workload generation and the Markdown report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str) -> ModuleType:
    """A bench/ module under a private name: bench/ is scripts, not a package on sys.path."""
    spec = importlib.util.spec_from_file_location(f"lamina_bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


report = _load("report")
wl = _load("workloads")


def test_the_generator_is_deterministic(tmp_path: Path) -> None:
    for letter, workload in wl.workloads(wl.TINY).items():
        one = wl.generate(workload, tmp_path / "one" / letter)
        two = wl.generate(workload, tmp_path / "two" / letter)
        assert wl.tree_digest(one) == wl.tree_digest(two), letter
        assert (one / "Dockerfile").read_text() == workload.dockerfile


def test_sizes_follow_the_scale(tmp_path: Path) -> None:
    app = wl.workloads(wl.TINY)["a"]
    context = wl.generate(app, tmp_path / "a")
    sources = [p for p in (context / "src").rglob("*") if p.is_file()]
    assert len(sources) == wl.TINY.src_files
    assert sum(p.stat().st_size for p in sources) == wl.TINY.src_bytes
    assert (context / "bin" / "app").stat().st_size == wl.TINY.binary_bytes


def test_the_full_scale_matches_the_issue() -> None:
    full = wl.workloads(wl.FULL)
    many = [line for line in full["b"].dockerfile.splitlines() if line]
    assert len(many) == 60 and sum(line.startswith("RUN ") for line in many) == 40
    assert sum(size for _, size, _ in full["c"].files) == pytest.approx(400 << 20, rel=0.01)
    assert len(full["c"].files) == 20_000
    assert full["e"].dockerfile.count("FROM ") == 4


def test_mutate_changes_one_copied_file_and_restores_it(tmp_path: Path) -> None:
    for workload in wl.workloads(wl.TINY).values():
        context = wl.generate(workload, tmp_path / workload.letter)
        before = wl.tree_digest(context)
        wl.mutate(workload, context, 3)
        assert wl.tree_digest(context) != before
        assert context / workload.mutable in set(wl.copied_files(workload, context))
        wl.mutate(workload, context, 0)
        assert wl.tree_digest(context) == before


def test_the_report_has_ratios_and_a_worst_figure(tmp_path: Path) -> None:
    results = report.Results([("lamina", "lamina"), ("buildkit", "BuildKit")], ["cold"], [("a", "app")])
    results.add("a", "cold", "lamina", report.Sample(1.0, 50.0, True))
    results.add("a", "cold", "buildkit", report.Sample(4.0, 10.0, True))
    results.reference["a"] = (10_000_000, 0.05)
    text = report.markdown(results)
    assert "| (a) app | cold | 1.00 s | 4.00 s | 0.25 | 50 MB |" in text
    assert "**0.25**" in text
    readme = tmp_path / "README.md"
    readme.write_text("# bench\n")
    report.write_readme(readme, text)
    report.write_readme(readme, text)
    assert readme.read_text().count(report.START) == 1 and readme.read_text().startswith("# bench\n")
