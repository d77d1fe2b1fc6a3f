"""The glob patterns of ``${VAR#pat}``, ``${VAR%pat}`` and ``${VAR/pat/repl}``.

BuildKit supports ``*`` and ``?`` and the escapes ``\\*``, ``\\?``, ``\\\\``
(plus ``\\}`` and ``\\/``, which only protect the closing characters of
``${...}``); bracket expressions are not supported and any other escape is
an error. Patterns become regular expressions; the suffix forms search the
reversed string, because a regex cannot find the shortest rightmost match.
``${VAR//pat/repl}`` follows Go's ``ReplaceAllString``: an empty match right
after a previous match is skipped, and ``$0``/``$$`` in the replacement are
template references (other ``$name`` references expand to nothing).
"""

from __future__ import annotations

import re

__all__ = ["pattern_to_regex", "replace_pattern", "trim_prefix", "trim_suffix"]


def pattern_to_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """Compile a shell pattern; raise ValueError for an invalid escape."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = pattern[i] if i < len(pattern) else ""
            if following in ("}", "/") and following:
                continue
            if following not in ("*", "?", "\\") or not following:
                raise ValueError(f"invalid escape '\\{following}'")
            out.append(re.escape(following))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))


def trim_prefix(value: str, pattern: str, greedy: bool) -> str:
    """``${VAR#pattern}`` (shortest) or ``${VAR##pattern}`` (greedy)."""
    match = pattern_to_regex(pattern, greedy=greedy, anchored=True).match(value)
    return value[match.end() :] if match else value


def trim_suffix(value: str, pattern: str, greedy: bool) -> str:
    """``${VAR%pattern}`` (shortest) or ``${VAR%%pattern}`` (greedy)."""
    return trim_prefix(value[::-1], _reverse_pattern(pattern), greedy)[::-1]


def _reverse_pattern(pattern: str) -> str:
    # Reverse token by token so an escape stays in front of what it escapes.
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        step = 2 if pattern[i] == "\\" and i + 1 < len(pattern) else 1
        tokens.append(pattern[i : i + step])
        i += step
    return "".join(reversed(tokens))


def replace_pattern(value: str, pattern: str, replacement: str, *, replace_all: bool) -> str:
    """``${VAR/pattern/replacement}``, or every match for ``//``."""
    regex = pattern_to_regex(pattern, greedy=True, anchored=False)
    if not replace_all:
        match = regex.search(value)
        return value if match is None else value[: match.start()] + replacement + value[match.end() :]
    out: list[str] = []
    last_end = 0
    pos = 0
    while pos <= len(value):
        match = regex.search(value, pos)
        if match is None:
            break
        start, end = match.span()
        out.append(value[last_end:start])
        if end > last_end or start == 0:
            out.append(_go_template(replacement, match.group(0)))
        last_end = end
        pos = pos + 1 if pos + 1 > end else end
    out.append(value[last_end:])
    return "".join(out)


_TEMPLATE_NAME = re.compile(r"\{(\w+)\}|(\w+)")


def _go_template(template: str, whole: str) -> str:
    """Expand a Go regexp replacement template for a pattern with no groups."""
    out: list[str] = []
    i = 0
    while (dollar := template.find("$", i)) >= 0:
        out.append(template[i:dollar])
        i = dollar + 1
        if template.startswith("$", i):
            out.append("$")
            i += 1
            continue
        ref = _TEMPLATE_NAME.match(template, i)
        if ref is None:  # malformed: the `$` is plain text
            out.append("$")
            continue
        i = ref.end()
        name = ref.group(1) or ref.group(2)
        if name.isdecimal() and int(name) == 0:
            out.append(whole)
    out.append(template[i:])
    return "".join(out)
