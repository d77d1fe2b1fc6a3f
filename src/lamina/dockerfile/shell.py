"""Docker's word expansion: quotes, escapes and ``$VAR`` substitution.

This is not a shell. It reproduces the small language BuildKit applies to the
words of ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME and
WORKDIR before it uses them: single and double quotes, the escape character
(``\\`` or the one set by ``# escape=``), ``$NAME``, ``${NAME}`` and the
modifiers ``:-  -  :+  +  :?  ?  #  ##  %  %%  /  //``. Everything else,
``$`` before a non-name character included, is kept literally, as Docker
does. Variable names are case-sensitive (Linux semantics).

A :class:`Lexer` is an immutable value; each call scans with a fresh
:class:`_Scan` so a lexer can be shared freely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lamina.errors import ExpansionError
from lamina.model import model

from .shellpattern import replace_pattern, trim_prefix, trim_suffix

__all__ = ["Expansion", "Lexer"]

_EOF = ""
# POSIX special parameters: `$#`, `$@`... are read as one-character names
# (always unset here), exactly as BuildKit does.
_SPECIAL_PARAMS = frozenset("@*#?-$!0")


@model
class Expansion:
    """The result of expanding one word.

    ``text`` is the whole word (no field splitting), ``fields`` the word split
    on unquoted whitespace (what ProcessWords gives), ``names`` every variable
    name the word looked up, set or not: a cache key must change when any of
    them does.
    """

    text: str
    fields: tuple[str, ...]
    names: frozenset[str]


@model
class Lexer:
    """Word expansion with ``escape`` as the escape character.

    ``process_quotes=False`` leaves quote characters alone; BuildKit uses that
    mode (always with ``\\``) to expand the bodies of COPY/ADD heredocs.
    """

    escape: str = "\\"
    process_quotes: bool = True

    def __post_init__(self) -> None:
        if len(self.escape) != 1:
            raise ValueError(f"escape must be one character, not {self.escape!r}")

    def process(self, word: str, env: Mapping[str, str]) -> Expansion:
        """Expand ``word`` against ``env``; raise :class:`ExpansionError` on bad syntax."""
        scan = _Scan(word, env, self.escape, self.process_quotes)
        try:
            text, fields = scan.until(_EOF, raw_escapes=False)
        except _SyntaxError as exc:
            raise ExpansionError(f"failed to process {_go_quote(word)}: {exc}") from None
        return Expansion(text, tuple(fields), frozenset(scan.names))

    def expand_word(self, word: str, env: Mapping[str, str]) -> str:
        """One word: quotes removed, escapes processed, variables substituted."""
        return self.process(word, env).text

    def expand_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Like :meth:`expand_word`, then split on unquoted whitespace."""
        return list(self.process(word, env).fields)

    def expand_word_tracking(self, word: str, env: Mapping[str, str]) -> tuple[str, frozenset[str]]:
        """:meth:`expand_word` plus the names of the variables it referenced."""
        result = self.process(word, env)
        return result.text, result.names


class _SyntaxError(Exception):
    """Raised inside a scan; :meth:`Lexer.process` adds the word to the message."""


class _Fields:
    """Accumulates fields; only characters that came unquoted can split."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.word = ""
        self.in_word = False

    def splittable(self, text: str) -> None:
        for ch in text:
            if not ch.isspace():
                self.literal(ch)
            elif self.in_word and self.word:
                self.done.append(self.word)
                self.word, self.in_word = "", False

    def literal(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def result(self) -> list[str]:
        # An empty quoted word ("") yields no field, as in BuildKit.
        return [*self.done, self.word] if self.word else list(self.done)


class _Scan:
    """One left-to-right pass over a word (recursive for ``${...}``)."""

    def __init__(self, word: str, env: Mapping[str, str], escape: str, quotes: bool) -> None:
        self.src = word
        self.pos = 0
        self.env = env
        self.escape = escape
        self.quotes = quotes
        self.names: set[str] = set()

    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else _EOF

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def lookup(self, name: str) -> str | None:
        self.names.add(name)
        return self.env.get(name)

    def until(self, stop: str, *, raw_escapes: bool) -> tuple[str, list[str]]:
        """Scan up to ``stop`` (consumed) or the end; return text and fields."""
        out: list[str] = []
        fields = _Fields()
        while (ch := self.peek()) != _EOF:
            if stop and ch == stop:
                self.next()
                return "".join(out), fields.result()
            if ch == "$":
                value = self.dollar()
                out.append(value)
                fields.splittable(value)
            elif self.quotes and ch in "'\"":
                value = self.single_quoted() if ch == "'" else self.double_quoted(raw_escapes)
                out.append(value)
                fields.literal(value)
            elif self.next() == self.escape:
                if raw_escapes:
                    out.append(ch)
                    fields.literal(ch)
                escaped = self.next()
                if escaped == _EOF:  # a trailing escape character is dropped
                    break
                out.append(escaped)
                fields.literal(escaped)
            else:
                out.append(ch)
                fields.splittable(ch)
        if stop:
            raise _SyntaxError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), fields.result()

    def single_quoted(self) -> str:
        self.next()
        end = self.src.find("'", self.pos)
        if end < 0:
            raise _SyntaxError("unexpected end of statement while looking for matching single-quote")
        text, self.pos = self.src[self.pos : end], end + 1
        return text

    def double_quoted(self, raw_escapes: bool) -> str:
        # Inside double quotes the escape character only escapes `"`, `$` and
        # itself; before anything else it stays literal (sh semantics).
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise _SyntaxError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.next()
            if ch == self.escape:
                if raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        ch = self.peek()
        if ch.isdecimal():
            start = self.pos
            while self.peek().isdecimal():
                self.next()
            return self.src[start : self.pos]
        if ch in _SPECIAL_PARAMS and ch:
            return self.next()
        start = self.pos
        while (ch := self.peek()) and (ch.isalpha() or ch.isdecimal() or ch == "_"):
            self.next()
        return self.src[start : self.pos]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:  # `$` before a non-name character is literal
                return "$"
            return self.lookup(name) or ""
        self.next()
        ch = self.peek()
        if ch == _EOF:
            raise _SyntaxError("syntax error: missing '}'")
        if ch in "{}:":
            raise _SyntaxError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            return self.lookup(name) or ""
        if op == "/":
            return self.replace(name)
        null_is_unset = op == ":"
        if null_is_unset:
            op = self.next()
        if op not in ("+", "-", "?", "#", "%"):
            raise _SyntaxError(f"unsupported modifier ({':' if null_is_unset else ''}{op}) in substitution")
        return self.modifier(name, op, null_is_unset)

    def braced_word(self, stop: str, raw_escapes: bool, missing: str) -> str:
        try:
            return self.until(stop, raw_escapes=raw_escapes)[0]
        except _SyntaxError:
            if self.peek() == _EOF:
                raise _SyntaxError(missing) from None
            raise

    def modifier(self, name: str, op: str, null_is_unset: bool) -> str:
        # Patterns keep their escapes so `\*` stays a literal star.
        word = self.braced_word("}", op in "#%", "syntax error: missing '}'")
        value = self.lookup(name)
        unset = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if unset else value or ""
        if op == "+":
            return "" if unset else word
        if op == "?":
            if value is None:
                raise _SyntaxError(f"{name}: {word or 'is not allowed to be unset'}")
            if unset:
                raise _SyntaxError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(op)
        pattern = word[1:] if greedy else word
        trim: Callable[[str, str, bool], str] = trim_prefix if op == "#" else trim_suffix
        return _pattern_call(trim, pattern, value or "", greedy)

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self.braced_word("/", True, "syntax error: missing '/' in ${}")
        replacement = self.braced_word("}", True, "syntax error: missing '}'")
        value = self.lookup(name) or ""
        try:
            return replace_pattern(value, pattern, replacement, replace_all=replace_all)
        except ValueError as exc:
            raise _SyntaxError(f"invalid pattern ({pattern}) in substitution: {exc}") from None


def _pattern_call(trim: Callable[[str, str, bool], str], pattern: str, value: str, greedy: bool) -> str:
    try:
        return trim(value, pattern, greedy)
    except ValueError as exc:
        raise _SyntaxError(f"invalid pattern ({pattern}) in substitution: {exc}") from None


def _go_quote(text: str) -> str:
    """Approximate Go's ``%q`` so messages read like BuildKit's."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
