"""Instruction flags (``--name=value``), checked the way BuildKit checks them.

Each instruction declares the flags it accepts; anything else is an error,
as is a repeated flag (except the repeatable ones such as ``--mount``), a
string flag without ``=value`` and a boolean flag whose value is not
``true``/``false``. Values are kept raw: expanding them is the caller's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from lamina.errors import DockerfileError
from lamina.model import model

__all__ = ["FlagKind", "Flags", "parse_flags"]


class FlagKind(Enum):
    """How a flag takes its value."""

    BOOL = "bool"  # --link, --link=true, --link=false
    STRING = "string"  # --from=NAME, at most once
    STRINGS = "strings"  # --mount=..., repeatable


@model
class Flags:
    """The flags given to one instruction, by name without the dashes."""

    values: Mapping[str, tuple[str, ...]]

    def string(self, name: str) -> str | None:
        """The value of a string flag, or None when it was not given."""
        found = self.values.get(name)
        return found[-1] if found else None

    def strings(self, name: str) -> tuple[str, ...]:
        """Every value of a repeatable flag, in order."""
        return self.values.get(name, ())

    def boolean(self, name: str) -> bool:
        """A boolean flag; absent means False."""
        return self.string(name) == "true"


def parse_flags(raw: tuple[str, ...], accepted: Mapping[str, FlagKind]) -> Flags:
    """Check ``raw`` words (``--name[=value]``) against ``accepted``.

    Raises :class:`DockerfileError` (without a line; the caller locates it).
    """
    values: dict[str, tuple[str, ...]] = {}
    for word in raw:
        if not word.startswith("--"):
            raise DockerfileError(f"arg should start with -- : {word}")
        if word == "--":
            break
        name, has_value, value = word[2:].partition("=")
        kind = accepted.get(name)
        if kind is None:
            raise DockerfileError(f"unknown flag: --{name}")
        if name in values and kind is not FlagKind.STRINGS:
            raise DockerfileError(f"duplicate flag specified: --{name}")
        if kind is FlagKind.BOOL:
            value = _boolean(name, value, has_value=bool(has_value))
        elif not has_value:
            raise DockerfileError(f"missing a value on flag: --{name}")
        values[name] = (*values.get(name, ()), value)
    return Flags(values)


def _boolean(name: str, value: str, *, has_value: bool) -> str:
    if has_value and not value:
        raise DockerfileError(f"missing a value on flag: --{name}")
    lower = value.lower() or "true"
    if lower not in ("true", "false"):
        raise DockerfileError(f"expecting boolean value for flag --{name}, not: {value}")
    return lower
