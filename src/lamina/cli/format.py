"""Docker's ways of printing sizes, ages and IDs, so output reads the same."""

from __future__ import annotations

import re
import time
from datetime import datetime

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def human_size(size: float) -> str:
    """Decimal units with 3 significant digits: ``0B``, ``4.26MB`` (docker's HumanSize)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.3g}{units[i]}"


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(s / 3600 + 0.5)  # Go rounds half away from zero
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{s // 3600 // 24 // 365} years"  # Go uses the unrounded hours here


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 timestamp (nanoseconds and offsets allowed) as epoch seconds."""
    if not text:
        return None
    m = _RFC3339.match(text)
    if not m:
        return None
    try:
        stamp = datetime.fromisoformat(m.group(1) + (m.group(3) or "+00:00").replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp.timestamp() + (float("0." + m.group(2)) if m.group(2) else 0.0)


def ago(text: str | None) -> str:
    epoch = parse_time(text)
    if epoch is None:
        return "N/A"
    return human_duration(max(0.0, time.time() - epoch)) + " ago"


def table(rows: list[list[str]]) -> str:
    """Columns padded like docker's tabwriter (3 spaces between columns)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
