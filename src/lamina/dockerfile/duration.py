"""Go's ``time.ParseDuration``, which HEALTHCHECK's duration flags use.

A duration is an optional sign and one or more decimal numbers, each with a
unit (``ns us µs μs ms s m h``): ``1h30m``, ``1.5s``, ``-2ms``. A lone ``0``
needs no unit. Results are integer nanoseconds; fractions are truncated and
values beyond Go's int64 are rejected, so we agree with Docker's limits.
Error messages are Go's, because users compare them with Docker's output.
"""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX = 2**63 - 1
_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_duration(text: str) -> int:
    """Nanoseconds in ``text``; raise ValueError with Go's message."""
    invalid = ValueError(f"time: invalid duration {_quote(text)}")
    rest = text
    negative = rest.startswith("-")
    rest = rest[1:] if rest[:1] in ("-", "+") else rest
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        part = _PART.match(rest)
        assert part is not None  # the pattern can match the empty string
        whole, fraction, unit = part.group(1), part.group(2), part.group(3)
        if not whole and not fraction:  # no digits at all, e.g. ".s" or "abc"
            raise invalid
        if not unit:
            raise ValueError(f"time: missing unit in duration {_quote(text)}")
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {_quote(unit)} in duration {_quote(text)}")
        scale = _UNITS[unit]
        # Integer arithmetic: exact, and the fraction truncates as in Go.
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        rest = rest[part.end() :]
    nanoseconds = total
    if nanoseconds > _MAX + (1 if negative else 0):
        raise invalid
    return -nanoseconds if negative else nanoseconds


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
