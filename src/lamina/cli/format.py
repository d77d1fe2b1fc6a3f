"""Docker's ways of printing sizes, ages and IDs, so output reads the same."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from lamina.errors import LaminaError

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


# -- docker's --format: the Go template subset people write --------------------------------------------

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\||[^\s|]+')
_NO_VALUE = "<no value>"


class TemplateError(LaminaError):
    """A --format template that does not parse or names a field the data lacks."""


def split_table(fmt: str) -> tuple[bool, str]:
    """``table {{...}}`` → (True, template); docker also turns a literal ``\\t``/``\\n`` into tab/newline."""
    is_table = fmt == "table" or fmt.startswith("table ")
    template = fmt[len("table"):] if is_table else fmt
    return is_table, template.strip(" ").replace("\\t", "\t").replace("\\n", "\n")


def render(template: str, data: Any) -> str:
    """Fill ``template`` from ``data`` (dicts and lists): ``{{.A.B}}``, ``{{json .}}``,
    ``{{join .L ","}}``, ``{{index .M "k"}}``, ``{{len .L}}``, ``{{upper|lower|title .S}}``,
    ``{{println .A}}`` and pipes (``{{.A | json}}``), printed as Go's text/template prints values."""
    out: list[str] = []
    pos = 0
    for match in _ACTION.finditer(template):
        out.append(template[pos:match.start()])
        out.append(_text(_pipeline(match.group(1), data)))
        pos = match.end()
    rest = template[pos:]
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"template: unclosed action in {template!r}")
    return "".join(out) + rest


def header(template: str, titles: dict[str, str]) -> str:
    """The header line of a ``table`` template: each field replaced by its column title."""
    def title(match: re.Match[str]) -> str:
        fields = [t for t in _TOKEN.findall(match.group(1)) if t.startswith(".") and len(t) > 1]
        if not fields:
            return ""
        name = str(fields[0]).lstrip(".").split(".")[-1]
        return titles.get(name, name.upper())
    return _ACTION.sub(title, template)


def _pipeline(text: str, data: Any) -> Any:
    commands: list[list[str]] = [[]]
    for token in _TOKEN.findall(text):
        if token == "|":
            commands.append([])
        else:
            commands[-1].append(token)
    if not all(commands):
        raise TemplateError(f"template: missing command in {{{{{text}}}}}")
    value: Any = None
    for i, words in enumerate(commands):
        piped = [] if i == 0 else [value]
        value = _command(words, piped, data)
    return value


def _command(words: list[str], piped: list[Any], data: Any) -> Any:
    name, args = words[0], [_operand(w, data) for w in words[1:]] + piped
    if name.startswith((".", '"', "`")) or name[:1].isdigit():
        if args:
            raise TemplateError(f"template: can't give arguments to {name}")
        return _operand(name, data)
    function = _FUNCTIONS.get(name)
    if function is None:
        raise TemplateError(f'template: function "{name}" not defined')
    try:
        return function(*args)
    except (TypeError, KeyError, IndexError) as exc:
        raise TemplateError(f"template: {name}: {exc}") from None


def _operand(word: str, data: Any) -> Any:
    if word.startswith('"'):
        return json.loads(word)
    if word.startswith("`"):
        return word[1:-1]
    if word[:1].isdigit() or word[:1] == "-":
        return int(word)
    if word == ".":
        return data
    if not word.startswith("."):
        raise TemplateError(f"template: unexpected {word!r} (use .Field or a function)")
    value = data
    for part in word[1:].split("."):
        if not isinstance(value, dict) or part not in value:
            raise TemplateError(f"template: can't evaluate field {part}"
                                + (f" (fields: {', '.join(value)})" if isinstance(value, dict) else ""))
        value = value[part]
    return value


def _text(value: Any) -> str:
    """A value as Go's fmt ``%v`` prints it inside a template."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "[" + " ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes it: compact, with ``<``, ``>`` and ``&`` escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            if key not in value:
                return _NO_VALUE
            value = value[key]
        else:
            value = value[key]
    return value


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": go_json,
    "join": lambda items, sep: sep.join(_text(i) for i in items),
    "index": _index,
    "len": len,
    "upper": lambda s: _text(s).upper(),
    "lower": lambda s: _text(s).lower(),
    "title": lambda s: _text(s).title(),
    "println": lambda *a: " ".join(_text(v) for v in a) + "\n",
    "print": lambda *a: "".join(_text(v) for v in a),
}
