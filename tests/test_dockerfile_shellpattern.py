"""Glob patterns of ${VAR#pat}, ${VAR%pat} and ${VAR/pat/repl}."""

from __future__ import annotations

import pytest

from lamina.dockerfile.shellpattern import pattern_to_regex, replace_pattern, trim_prefix, trim_suffix


@pytest.mark.parametrize(
    ("pattern", "regex"),
    [
        ("*", "^.*"),
        ("?", "^."),
        ("\\*", "^\\*"),
        ("a.b", "^a\\.b"),
        ("\\}", "^\\}"),
        ("\\/", "^/"),
        ("(()[]{\\}^$.\\*\\?|\\\\", "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\"),
    ],
)
def test_pattern_to_regex(pattern: str, regex: str) -> None:
    assert pattern_to_regex(pattern, greedy=True, anchored=True).pattern == regex


@pytest.mark.parametrize("pattern", ["\\", "\\x", "\\\\\\"])
def test_invalid_escapes(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid escape"):
        pattern_to_regex(pattern, greedy=True, anchored=True)


def test_non_greedy_star() -> None:
    assert pattern_to_regex("a*", greedy=False, anchored=False).pattern == "a.*?"


@pytest.mark.parametrize(
    ("value", "pattern", "greedy", "expected"),
    [
        ("xxyy", "x", False, "xyy"),
        ("xxyy", "*x", False, "xyy"),
        ("xxyy", "*x", True, "yy"),
        ("xxyy", "z", False, "xxyy"),
        ("a/b/c", "*/", True, "c"),
    ],
)
def test_trim_prefix(value: str, pattern: str, greedy: bool, expected: str) -> None:
    assert trim_prefix(value, pattern, greedy) == expected


@pytest.mark.parametrize(
    ("value", "pattern", "greedy", "expected"),
    [
        ("xxyy", "y", False, "xxy"),
        ("xxyy", "y*", False, "xxy"),
        ("xxyy", "y*", True, "xx"),
        ("a/b/c", "/*", False, "a/b"),
        ("a/b/c", "/*", True, "a"),
        ("a*b*", "\\**", False, "a*b"),
        ("👽🚀🖖", "🖖", False, "👽🚀"),
    ],
)
def test_trim_suffix(value: str, pattern: str, greedy: bool, expected: str) -> None:
    assert trim_suffix(value, pattern, greedy) == expected


@pytest.mark.parametrize(
    ("value", "pattern", "replacement", "replace_all", "expected"),
    [
        ("aaa", "a", "b", False, "baa"),
        ("aaa", "a", "b", True, "bbb"),
        ("abc", "", "-", False, "-abc"),
        # Go skips an empty match right after a previous match.
        ("abc", "", "-", True, "-a-b-c-"),
        ("axb", "*", "-", True, "-"),
        ("abc", "b", "$0$0", True, "abbc"),
        ("abc", "b", "${0}", True, "abc"),
        ("abc", "b", "$x", True, "ac"),
        ("abc", "b", "$$", True, "a$c"),
        ("abc", "b", "$", True, "a$c"),
        ("abc", "b", "$0", False, "a$0c"),
    ],
)
def test_replace_pattern(
    value: str, pattern: str, replacement: str, replace_all: bool, expected: str
) -> None:
    assert replace_pattern(value, pattern, replacement, replace_all=replace_all) == expected
