"""The benchmark's results as Markdown: medians per scenario, ratios, sizes, the physical reference.

Pure functions over the collected samples; ``write_readme`` replaces the table between the
markers of bench/README.md and leaves the rest of the file alone.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed command: wall seconds, peak RSS of it and its waited-for children, success."""

    seconds: float
    rss_mb: float
    ok: bool


@dataclass
class Results:
    """Everything one benchmark invocation measured."""

    tools: list[tuple[str, str]]  # (name, label), lamina first
    scenarios: list[str]
    workloads: list[tuple[str, str]]  # (letter, title)
    samples: dict[tuple[str, str, str], list[Sample]] = field(default_factory=dict)  # (letter, scenario, tool)
    sizes: dict[tuple[str, str], int | None] = field(default_factory=dict)  # (letter, tool) → bytes as pushed
    reference: dict[str, tuple[int, float]] = field(default_factory=dict)  # letter → (copied bytes, seconds)
    run_counts: dict[str, int] = field(default_factory=dict)  # letter → RUN instructions
    runc_seconds: float | None = None  # a bare `runc run` of /bin/true
    loads: list[float] = field(default_factory=list)  # the load average before each timed command
    header: str = ""

    def add(self, letter: str, scenario: str, tool: str, sample: Sample) -> None:
        self.samples.setdefault((letter, scenario, tool), []).append(sample)


def median(samples: list[Sample]) -> float | None:
    """The median wall time, or None when any run failed or none ran."""
    if not samples or not all(s.ok for s in samples):
        return None
    return statistics.median(s.seconds for s in samples)


def ratio(results: Results, letter: str, scenario: str) -> float | None:
    """lamina's median over the best peer's, for one scenario."""
    mine = median(results.samples.get((letter, scenario, "lamina"), []))
    peers = [median(results.samples.get((letter, scenario, name), [])) for name, _ in results.tools
             if name != "lamina"]
    best = min((p for p in peers if p is not None), default=None)
    if mine is None or best is None or best <= 0:
        return None
    return mine / best


def cold_bar(results: Results, letter: str) -> float | None:
    """The issue's bound for a cold build: twice the physical reference plus RUN start-up."""
    if results.runc_seconds is None or letter not in results.reference:
        return None
    return 2 * results.reference[letter][1] + results.run_counts.get(letter, 0) * results.runc_seconds


def _cell(samples: list[Sample] | None) -> str:
    if not samples:
        return "—"
    m = median(samples)
    return "failed" if m is None else f"{m:.2f} s"


def _mb(size: int | None) -> str:
    if size is None:
        return "—"
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def _short(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def markdown(results: Results) -> str:
    """The full report: header, the time table, the per-workload table and the worst ratio."""
    labels = [label for _, label in results.tools]
    lines = [results.header, "",
             "| workload | scenario | " + " | ".join(labels) + " | lamina / best peer | lamina peak RSS |",
             "|---|---|" + "---:|" * len(labels) + "---:|---:|"]
    worst: tuple[float, str] | None = None
    for letter, title in results.workloads:
        for scenario in results.scenarios:
            cells = [_cell(results.samples.get((letter, scenario, name))) for name, _ in results.tools]
            r = ratio(results, letter, scenario)
            if r is not None and (worst is None or r > worst[0]):
                worst = (r, f"({letter}) {scenario}")
            rss = [s.rss_mb for s in results.samples.get((letter, scenario, "lamina"), [])]
            lines.append(f"| ({letter}) {title} | {scenario} | " + " | ".join(cells)
                         + f" | {'—' if r is None else f'{r:.2f}'} | {f'{max(rss):.0f} MB' if rss else '—'} |")
    lines += ["", "| workload | copied bytes | physical reference | cold bar | "
              + " | ".join(f"image size {label}" for label in labels) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(labels)]
    for letter, title in results.workloads:
        copied, seconds = results.reference.get(letter, (0, 0.0))
        sizes = [_mb(results.sizes.get((letter, name))) for name, _ in results.tools]
        bar = cold_bar(results, letter)
        lines.append(f"| ({letter}) {title} | {_mb(copied)} | {_short(seconds)} | "
                     + ("—" if bar is None else _short(bar)) + " | " + " | ".join(sizes) + " |")
    runc = "not measured" if results.runc_seconds is None else _short(results.runc_seconds)
    lines += ["", "Physical reference: read + sha256 + gzip (isal, level 1) of the bytes COPY reads, one thread. "
              f"Cold bar: 2 × that + the workload's RUNs × a bare `runc run` of /bin/true ({runc})."]
    if worst:
        lines += ["", f"Worst ratio lamina / best peer: **{worst[0]:.2f}** ({worst[1]})."]
    return "\n".join(lines) + "\n"


def machine() -> str:
    """One line on the machine: CPU model, cores, memory, kernel."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB RAM, Linux {platform.release()}"


def load_average() -> float:
    """The 1-minute load average: how busy the machine was around a measurement."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def versions(commands: dict[str, list[str]], env: dict[str, str]) -> str:
    """``label version`` for each tool, from its own version command."""
    out = []
    for label, argv in commands.items():
        try:
            text = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env).stdout.strip().splitlines()
        except (OSError, subprocess.TimeoutExpired):
            text = []
        out.append(text[0] if text else f"{label} ?")
    return "; ".join(out)


def write_readme(readme: Path, report: str) -> None:
    """Put ``report`` between the result markers of ``readme`` (appending the markers if missing)."""
    text = readme.read_text() if readme.exists() else ""
    block = f"{START}\n{report}{END}"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)
