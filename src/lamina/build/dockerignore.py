"""``.dockerignore``: which files of the build context a build may see.

The rules are those of moby/patternmatcher, which both the classic builder
and BuildKit use:

* one pattern per line; a line starting with ``#`` (in column one) is a
  comment; blank lines are skipped; surrounding whitespace is trimmed;
* each pattern is cleaned like Go's ``filepath.Clean`` and a leading ``/``
  (or ``./``) dropped, so patterns are always relative to the context root;
* ``!pattern`` re-includes what an earlier pattern excluded; the last pattern
  that matches a path decides;
* ``*``, ``?``, ``[...]``, ``[^...]`` and ``\\`` escapes work per path
  component as in Go's ``filepath.Match``; ``**`` matches any number of
  directories (zero included);
* a pattern that matches a directory also matches everything below it.

An excluded directory can only be skipped without walking it when no
exception could re-include something inside it (:meth:`IgnoreMatcher.can_skip_dir`).

:func:`go_glob_regex` is shared with the COPY source wildcards, which use the
same ``filepath.Match`` syntax without ``**``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from lamina.build.rootpath import clean
from lamina.errors import ContextError
from lamina.model import model

_SPECIAL = frozenset("*?[\\")


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """Read one (possibly escaped) class character at ``i``, rejecting what Go rejects."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise ValueError(f"syntax error in pattern {pattern!r}")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise ValueError(f"syntax error in pattern {pattern!r}")
    return pattern[i], i + 1


def _class_regex(pattern: str, start: int) -> tuple[str, int]:
    """Translate the ``[...]`` class opening at ``start``; return (regex, index after ``]``)."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    while not (items and i < len(pattern) and pattern[i] == "]"):
        low, i = _class_char(pattern, i)
        high = low
        if i < len(pattern) and pattern[i] == "-":
            high, i = _class_char(pattern, i + 1)
        if high < low:
            raise ValueError(f"syntax error in pattern {pattern!r}: bad range")
        items.append(re.escape(low) if high == low else f"{re.escape(low)}-{re.escape(high)}")
    # A class never matches the separator: Go's matching is per path component.
    body = "".join(items)
    return (f"[^/{body}]" if negate else f"(?!/)[{body}]"), i + 1


def go_glob_regex(pattern: str, *, double_star: bool = False) -> str:
    """Translate a Go ``filepath.Match`` pattern (plus ``**`` if asked) into a Python regex.

    The regex is anchored at both ends.  Raises :class:`ValueError` for a
    malformed pattern (unterminated class, bad range, trailing backslash).
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*" and double_star and pattern.startswith("**", i):
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                i += 1
            out.append(".*" if i >= len(pattern) else "(?:.*/)?")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            regex, i = _class_regex(pattern, i)
            out.append(regex)
            continue
        elif char == "\\":
            i += 1
            if i >= len(pattern):
                raise ValueError(f"syntax error in pattern {pattern!r}: trailing \\")
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "^" + "".join(out) + "$"


def has_wildcards(component: str) -> bool:
    """Whether ``component`` holds an unescaped ``*``, ``?`` or ``[`` (fsutil's test)."""
    i = 0
    while i < len(component):
        if component[i] == "\\":
            i += 2
            continue
        if component[i] in "*?[":
            return True
        i += 1
    return False


@model
class IgnorePattern:
    """One cleaned ``.dockerignore`` line."""

    text: str
    exclusion: bool
    regex: re.Pattern[str]
    parts: tuple[re.Pattern[str] | None, ...]
    """One regex per ``/``-component; ``None`` for a ``**`` component (matches any depth)."""

    def match(self, path: str) -> bool:
        if self.text.startswith("**") and not (_SPECIAL & set(self.text[2:])):
            # patternmatcher's "suffix" fast path is a plain string test.
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        return self.regex.match(path) is not None

    def match_or_parent(self, path: str) -> bool:
        if self.match(path):
            return True
        parts = path.split("/")
        return any(self.match("/".join(parts[:n])) for n in range(1, len(parts)))

    def may_match_below(self, directory: tuple[str, ...]) -> bool:
        """Whether this pattern could match ``directory`` itself, an ancestor, or something inside."""
        for index, name in enumerate(directory):
            if index >= len(self.parts):
                return self.match("/".join(directory[:index]))
            part = self.parts[index]
            if part is None:
                return True
            if part.match(name) is None:
                return False
        return True


def compile_pattern(line: str) -> IgnorePattern:
    """Compile one pattern as ``patternmatcher.New`` would (``!`` prefix allowed)."""
    text = clean(line.strip())
    exclusion = text.startswith("!")
    if exclusion:
        if len(text) == 1:
            raise ContextError('.dockerignore: illegal exclusion pattern: "!"')
        text = text[1:]
    try:
        regex = re.compile(go_glob_regex(text, double_star=True), re.DOTALL)
        parts = tuple(
            None if "**" in part else re.compile(go_glob_regex(part), re.DOTALL) for part in text.split("/")
        )
    except ValueError as exc:
        raise ContextError(f".dockerignore: {exc}") from exc
    return IgnorePattern(text=text, exclusion=exclusion, regex=regex, parts=parts)


@model
class IgnoreMatcher:
    """An ordered list of patterns; the last one that matches a path decides."""

    patterns: tuple[IgnorePattern, ...] = ()

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> IgnoreMatcher:
        return cls(tuple(compile_pattern(p) for p in patterns if p.strip()))

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches(self, relpath: str) -> bool:
        """Whether ``relpath`` (``/``-separated, relative to the context) is ignored."""
        path = clean(relpath).lstrip("/")
        if path in (".", ""):
            return False  # the context root itself is never ignored
        ignored = False
        for pattern in self.patterns:
            if pattern.exclusion != ignored:
                continue  # cannot change the outcome
            if pattern.match_or_parent(path):
                ignored = not pattern.exclusion
        return ignored

    def can_skip_dir(self, relpath: str) -> bool:
        """Whether the directory ``relpath`` and everything below it are ignored.

        True only when the directory matches and no exception could
        re-include anything inside it; otherwise the walker must descend and
        test each entry with :meth:`matches`.
        """
        if not self.matches(relpath):
            return False
        parts = tuple(clean(relpath).lstrip("/").split("/"))
        return not any(p.exclusion and p.may_match_below(parts) for p in self.patterns)


def parse_ignore(text: str) -> IgnoreMatcher:
    """Parse ``.dockerignore`` text the way moby's ``ignorefile.ReadAll`` does."""
    patterns: list[str] = []
    for line in text.removeprefix("\ufeff").splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return IgnoreMatcher.from_patterns(patterns)


def load_ignore(context_dir: Path, dockerfile_path: Path | None = None) -> IgnoreMatcher:
    """Read the ignore file that applies to a build (an empty matcher if there is none).

    ``<Dockerfile name>.dockerignore`` next to the Dockerfile wins over
    ``<context>/.dockerignore``, as in BuildKit.
    """
    candidates = [context_dir / ".dockerignore"]
    if dockerfile_path is not None:
        candidates.insert(0, dockerfile_path.parent / (dockerfile_path.name + ".dockerignore"))
    for candidate in candidates:
        try:
            text = candidate.read_bytes().decode("utf-8", "surrogateescape")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise ContextError(f"reading {candidate}: {exc.strerror}") from exc
        return parse_ignore(text)
    return IgnoreMatcher()


__all__ = [
    "IgnoreMatcher",
    "IgnorePattern",
    "compile_pattern",
    "go_glob_regex",
    "has_wildcards",
    "load_ignore",
    "parse_ignore",
]
