"""The .dockerignore rules, as tables of (patterns, path, ignored?)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.dockerignore import IgnoreMatcher, go_glob_regex, has_wildcards, load_ignore, parse_ignore
from lamina.errors import ContextError

MATCHES = [
    # plain names match the path and everything below it
    (["secrets"], "secrets", True),
    (["secrets"], "secrets/a/b.txt", True),
    (["secrets"], "other/secrets", False),
    # exceptions: last matching pattern wins
    (["secrets", "!secrets/public.txt"], "secrets/public.txt", False),
    (["secrets", "!secrets/public.txt"], "secrets/private.txt", True),
    (["!keep", "*"], "keep", True),
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md", "README*"], "README.md", True),
    # * and ? stay inside one component; a matched dir hides its contents
    (["*/temp*"], "a/temp1", True),
    (["*/temp*"], "b/c/temp2", False),
    (["*/temp*"], "a/temp1/inner", True),
    (["*.txt"], "dir/a.txt", False),
    (["?.txt"], "a.txt", True),
    (["?.txt"], "ab.txt", False),
    # ** spans any number of directories, including none
    (["**/*.go"], "main.go", True),
    (["**/*.go"], "a/b/c.go", True),
    (["a/**/z"], "a/z", True),
    (["a/**/z"], "a/b/c/z", True),
    (["a/**"], "a/b/c", True),
    (["a/**"], "ab", False),
    (["**/foo"], "x/foo", True),
    (["**/foo"], "foo", True),
    (["**foo"], "x/barfoo", True),
    # character classes, negation and escapes (Go filepath.Match)
    (["[ab].txt"], "b.txt", True),
    (["[a-c]x"], "dx", False),
    (["[^a]x"], "bx", True),
    (["[^a]x"], "ax", False),
    (["\\*.txt"], "*.txt", True),
    (["\\*.txt"], "a.txt", False),
    # regex metacharacters are literal
    (["a+b(c).txt"], "a+b(c).txt", True),
    (["a.txt"], "abtxt", False),
    # cleaning: leading / and ./, trailing /, inner ..
    (["/abs"], "abs", True),
    (["./rel/"], "rel/x", True),
    (["a/../b"], "b", True),
    # the root can never be ignored
    (["*"], ".", False),
]


@pytest.mark.parametrize(("patterns", "path", "ignored"), MATCHES)
def test_matches(patterns: list[str], path: str, ignored: bool) -> None:
    assert parse_ignore("\n".join(patterns)).matches(path) is ignored


SKIPS = [
    (["secrets"], "secrets", True),
    (["secrets", "!secrets/public.txt"], "secrets", False),
    (["secrets", "!secrets/*/keep"], "secrets", False),
    (["secrets", "!other/x"], "secrets", True),
    (["secrets", "!**/keep"], "secrets", False),
    (["secrets", "!*.txt"], "secrets", True),
    (["build", "!build"], "build", False),  # not ignored at all
    (["*"], "dir", True),
]


@pytest.mark.parametrize(("patterns", "directory", "skippable"), SKIPS)
def test_can_skip_dir(patterns: list[str], directory: str, skippable: bool) -> None:
    assert IgnoreMatcher.from_patterns(patterns).can_skip_dir(directory) is skippable


def test_parse_file_syntax() -> None:
    text = "\ufeff# comment\n\n  spaced  \n/test2\n! /inverted/abs\n #notcomment\n./x/../y\n"
    matcher = parse_ignore(text)
    assert [(p.text, p.exclusion) for p in matcher.patterns] == [
        ("spaced", False),
        ("test2", False),
        ("inverted/abs", True),
        ("#notcomment", False),
        ("y", False),
    ]


@pytest.mark.parametrize("bad", ["!", "[", "a[b", "[]", "x\\", "[z-a]"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(ContextError):
        IgnoreMatcher.from_patterns([bad])


def test_load_prefers_dockerfile_specific_file(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / ".dockerignore").write_text("from-context\n")
    dockerfile = tmp_path / "build" / "app.Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text("FROM scratch\n")
    assert load_ignore(context, dockerfile).matches("from-context")
    (tmp_path / "build" / "app.Dockerfile.dockerignore").write_text("from-dockerfile\n")
    matcher = load_ignore(context, dockerfile)
    assert matcher.matches("from-dockerfile") and not matcher.matches("from-context")
    assert load_ignore(tmp_path / "nowhere").patterns == ()


@pytest.mark.parametrize(("component", "expected"), [("a*", True), ("a\\*", False), ("[x]", True), ("plain", False)])
def test_has_wildcards(component: str, expected: bool) -> None:
    assert has_wildcards(component) is expected


def test_glob_classes_never_match_separator() -> None:
    import re

    assert re.match(go_glob_regex("a[^x]b"), "a/b") is None
    assert re.match(go_glob_regex("a?b"), "a/b") is None
