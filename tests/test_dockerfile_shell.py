"""Word expansion, as a table: input, extra env, expected (ERROR = must fail).

The rows follow the behaviours BuildKit's shell lexer pins in its own
``envVarTest`` and ``wordsTest`` tables and ``TestProcessWithMatches``.
"""

from __future__ import annotations

import pytest

from lamina.dockerfile.shell import Lexer
from lamina.errors import ExpansionError

ERROR = object()
BASE_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}

# (word, extra env, expected text)
WORD_TABLE: list[tuple[str, dict[str, str], object]] = [
    # plain words, quotes and escapes
    ("hello", {}, "hello"),
    ("he'll'o", {}, "hello"),
    ("he'llo", {}, ERROR),
    ("he\\'llo", {}, "he'llo"),
    ("he\\\\'llo", {}, ERROR),
    ("abc\\tdef", {}, "abctdef"),
    ('"abc\\tdef"', {}, "abc\\tdef"),
    ('"abc\\\\tdef"', {}, "abc\\tdef"),
    ("'abc\\tdef'", {}, "abc\\tdef"),
    ("hello\\", {}, "hello"),
    ("hello\\\\", {}, "hello\\"),
    ('"hello', {}, ERROR),
    ('"hello\\"', {}, ERROR),
    ('"hel\'lo"', {}, "hel'lo"),
    ("'hello", {}, ERROR),
    ("'hello\\'", {}, "hello\\"),
    ("'hello\\there'", {}, "hello\\there"),
    ("'hello\\\\there'", {}, "hello\\\\there"),
    ("\"''\"", {}, "''"),
    ("'\"hello\"'", {}, '"hello"'),
    ('"a b"c', {}, "a bc"),
    ("a\\ b", {}, "a b"),
    ('""', {}, ""),
    ("''", {}, ""),
    ('"\\$"', {}, "$"),
    ('"\\a"', {}, "\\a"),
    # `$` followed by something that is not a name stays literal
    ("$.", {}, "$."),
    ("he$.x", {}, "he$.x"),
    ("$", {}, "$"),
    ("a$", {}, "a$"),
    ("$/x", {}, "$/x"),
    ('"$"', {}, "$"),
    ("$ x", {}, "$ x"),
    # simple variables
    ("he$PWD", {}, "he/home"),
    ("he$pwd.", {}, "he."),
    ("he$1x", {}, "hex"),
    ("$12ab", {}, "ab"),
    ("he\\$PWD", {}, "he$PWD"),
    ("he\\\\$PWD", {}, "he\\/home"),
    ('"he\\$PWD"', {}, "he$PWD"),
    ('"he\\\\$PWD"', {}, "he\\/home"),
    ("'he\\$PWD'", {}, "he\\$PWD"),
    ("$PWD", {}, "/home"),
    ('"$PWD"', {}, "/home"),
    ("'$PWD'", {}, "$PWD"),
    ("'\\$PWD'", {}, "\\$PWD"),
    ("\"he'$PWD'\"", {}, "he'/home'"),
    ("$KOREAN", {}, "한국어"),
    ("안녕$KOREAN", {}, "안녕한국어"),
    ("$PWD_x", {}, ""),
    ("${PWD}_x", {}, "/home_x"),
    ("$A_B", {"A_B": "ab"}, "ab"),
    ("$#", {}, ""),
    ("$@x", {}, "x"),
    ("$$", {}, ""),
    ("$NULL", {}, ""),
    # braces
    ("\\${}", {}, "${}"),
    ("\\${}aaa", {}, "${}aaa"),
    ("he\\${}", {}, "he${}"),
    ("he\\${}xx", {}, "he${}xx"),
    ("${}", {}, ERROR),
    ("${}aaa", {}, ERROR),
    ("he${}", {}, ERROR),
    ("he${}xx", {}, ERROR),
    ("he${hi}", {}, "he"),
    ("he${hi}xx", {}, "hexx"),
    ("he${PWD}", {}, "he/home"),
    ("he${.}", {}, ERROR),
    ("he${PWD", {}, ERROR),
    ("${", {}, ERROR),
    ("${{aaa}", {}, ERROR),
    ("${:aaa}", {}, ERROR),
    ("${aaa}}", {}, "}"),
    ("${aaa}}}", {}, "}}"),
    ("'he${XX}'", {}, "he${XX}"),
    ('"he${PWD}"', {}, "he/home"),
    # :- and -
    ("he${XXX:-000}xx", {}, "he000xx"),
    ("he${PWD:-000}xx", {}, "he/homexx"),
    ("he${XXX:-$PWD}xx", {}, "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", {}, "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", {}, "heyyyxx"),
    ("${NULL:-d}", {}, "d"),
    ("${NULL-d}", {}, ""),
    ("${XXX-d}", {}, "d"),
    ("${XXX:-}", {}, ""),
    ("${XXX:-a b}", {}, "a b"),
    ("${XXX:-'a}'}", {}, "a}"),
    ('${XXX:-"$PWD"}', {}, "/home"),
    ("he${XXX:-\\$PWD:}xx", {}, "he$PWD:xx"),
    ("he${XXX:-\\${PWD}z}xx", {}, "he${PWDz}xx"),
    ("${aaa:-bbb}}", {}, "bbb}"),
    ("${aaa:-bbb", {}, ERROR),
    # :+ and +
    ("he${XXX:+${PWD}}xx", {}, "hexx"),
    ("he${PWD:+${XXX}}xx", {}, "hexx"),
    ("he${PWD:+${SHELL}}xx", {}, "hebashxx"),
    ("he${XXX:+000}xx", {}, "hexx"),
    ("he${PWD:+000}xx", {}, "he000xx"),
    ("he${PWD:+${PWD}:}xx", {}, "he/home:xx"),
    ("${NULL:+set}", {}, ""),
    ("${NULL+set}", {}, "set"),
    ("${XXX+set}", {}, ""),
    # :? and ?
    ("he${XXX?}", {}, ERROR),
    ("he${XXX:?}", {}, ERROR),
    ("he${PWD?}", {}, "he/home"),
    ("he${PWD:?}", {}, "he/home"),
    ("he${NULL?}", {}, "he"),
    ("he${NULL:?}", {}, ERROR),
    ("${XXX?msg}", {}, ERROR),
    # unsupported modifiers
    ("he${XXX:YYY}", {}, ERROR),
    ("he${PWD:=000}xx", {}, ERROR),
    ("${FOO=aaa}", {"FOO": "x"}, ERROR),
    ("${FOO=}", {}, ERROR),
    ("${FOO!x}", {}, ERROR),
    # prefix / suffix trimming
    ("${V#prefix-}", {"V": "prefix-body-suffix"}, "body-suffix"),
    ("${V%-suffix}", {"V": "prefix-body-suffix"}, "prefix-body"),
    ("${V##*-}", {"V": "prefix-body-suffix"}, "suffix"),
    ("${V#*-}", {"V": "prefix-body-suffix"}, "body-suffix"),
    ("${V%%-*}", {"V": "prefix-body-suffix"}, "prefix"),
    ("${V%-*}", {"V": "prefix-body-suffix"}, "prefix-body"),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##*}", {"FOO": "xxyy"}, ""),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
    ("${FOO%y}", {"FOO": "xxyy"}, "xxy"),
    ("${FOO%%y*}", {"FOO": "xxyy"}, "xx"),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
    ("${FOO#\\x}", {"FOO": "xy"}, ERROR),
    ("${UNSET#x}", {}, ""),
    ("${FOO#a.c}", {"FOO": "abcd"}, "abcd"),
    ("${FOO#ab}", {"FOO": "한국ab"}, "한국ab"),
    ("${FOO%국ab}", {"FOO": "한국ab"}, "한"),
    # pattern substitution
    (
        "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
        {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
        "/foo.*/*.txt - /foo..*.txt",
    ),
    (
        "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
        {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
        "/tmp/bar.txt - /bar.txt",
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
        {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"},
        "/foo/b/c.txt - /foo/c.txt",
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT}",
        {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
        "https://google.de",
    ),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
    ("${FOO//ww}", {"FOO": "xxyy"}, ERROR),
    ("${FOO//}", {"FOO": "xxyy"}, ERROR),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO///}", {}, ""),
    ("${FOO/x/y}", {"FOO": "xxyy"}, "yxyy"),
    ("${FOO//x/y}", {"FOO": "xxyy"}, "yyyy"),
    ("${FOO/x*/z}", {"FOO": "axxyy"}, "az"),
    ("${FOO//?/-}", {"FOO": "abc"}, "---"),
    # The replacement keeps its escapes; `//` then applies Go's template
    # rules ($0 is the match), while `/` splices it in literally.
    ("${FOO/b/[$0]}", {"FOO": "abc"}, "a[]c"),
    ("${FOO/b/[\\$0]}", {"FOO": "abc"}, "a[\\$0]c"),
    ("${FOO//b/[\\$0]}", {"FOO": "abc"}, "a[\\b]c"),
    ("${FOO//b/$$}", {"FOO": "abc"}, "ac"),
    ("${FOO//\\a/x}", {"FOO": "abc"}, ERROR),
    ("${FOO/a", {"FOO": "abc"}, ERROR),
    ("${FOO/a/b", {"FOO": "abc"}, ERROR),
    # nesting and mixing
    ("${A:-${B:-${C:-deep}}}", {}, "deep"),
    ("${A:+x${PWD}y}", {"A": "1"}, "x/homey"),
    ("pre${PWD#/}post", {}, "prehomepost"),
    ('"${PWD} $SHELL"', {}, "/home bash"),
    ("${PWD}${SHELL}", {}, "/homebash"),
    ("'${PWD}'\"$SHELL\"", {}, "${PWD}bash"),
    ("a=${A:-b}=c", {}, "a=b=c"),
    ("${A}", {"A": "a b  c"}, "a b  c"),
    ("\\\\\\$PWD", {}, "\\$PWD"),
]


@pytest.mark.parametrize(("word", "extra", "expected"), WORD_TABLE, ids=[row[0] for row in WORD_TABLE])
def test_expand_word_table(word: str, extra: dict[str, str], expected: object) -> None:
    env = BASE_ENV | extra
    if expected is ERROR:
        with pytest.raises(ExpansionError):
            Lexer().expand_word(word, env)
    else:
        assert Lexer().expand_word(word, env) == expected


def test_table_is_large() -> None:
    assert len(WORD_TABLE) >= 100


# (word, env, expected fields): ProcessWords splits only unquoted whitespace.
FIELDS_TABLE: list[tuple[str, dict[str, str], list[str]]] = [
    ("hello", {}, ["hello"]),
    ("hello${hi}bye", {}, ["hellobye"]),
    ("hello${hi}bye", {"hi": "hi"}, ["hellohibye"]),
    ("hello${space}bye", {"space": "abc  def"}, ["helloabc", "defbye"]),
    ('hello"${space}"bye', {"space": "abc  def"}, ["helloabc  defbye"]),
    ('hello "${space}"bye', {"space": "abc  def"}, ["hello", "abc  defbye"]),
    ("hello${leading}def", {"leading": "  ab c"}, ["hello", "ab", "cdef"]),
    ('hello"${leading}" def', {"leading": "  ab c"}, ["hello  ab c", "def"]),
    ('hello"${leading}"', {"leading": "  ab c"}, ["hello  ab c"]),
    ("hello${leading}", {"leading": "  ab c"}, ["hello", "ab", "c"]),
    ("hello${trailing}", {"trailing": "ab c   "}, ["helloab", "c"]),
    ("hello${trailing}d", {"trailing": "ab c   "}, ["helloab", "c", "d"]),
    ('hello"${trailing}"d', {"trailing": "ab c   "}, ["helloab c   d"]),
    ('hel"lo${trailing}"', {"trailing": "ab c   "}, ["helloab c   "]),
    ('hello" there  "', {}, ["hello there  "]),
    ("hello there     ", {}, ["hello", "there"]),
    ("hello\\ there", {}, ["hello there"]),
    ('hello\\" there', {}, ['hello"', "there"]),
    ('hello"\\\\there"', {}, ["hello\\there"]),
    ('hello"\\there"', {}, ["hello\\there"]),
    ("hello'\\\\there'", {}, ["hello\\\\there"]),
    ("hello'$there'", {}, ["hello$there"]),
    ("  80  443/tcp ", {}, ["80", "443/tcp"]),
    ("$PORTS", {"PORTS": "80 443"}, ["80", "443"]),
    ('""', {}, []),
    ("a '' b", {}, ["a", "b"]),
]


@pytest.mark.parametrize(("word", "env", "expected"), FIELDS_TABLE, ids=[row[0] for row in FIELDS_TABLE])
def test_expand_words_table(word: str, env: dict[str, str], expected: list[str]) -> None:
    assert Lexer().expand_words(word, env) == expected


def test_words_error() -> None:
    with pytest.raises(ExpansionError):
        Lexer().expand_words('hello" there', {})


def test_required_variable_message() -> None:
    with pytest.raises(ExpansionError, match="NEEDED: must be set by the caller"):
        Lexer().expand_word("${NEEDED:?must be set by the caller}", {})
    with pytest.raises(ExpansionError, match="VAR: is not allowed to be unset"):
        Lexer().expand_word("${VAR?}", {})
    with pytest.raises(ExpansionError, match="VAR: is not allowed to be empty"):
        Lexer().expand_word("${VAR:?}", {"VAR": ""})
    # the message is itself expanded
    with pytest.raises(ExpansionError, match="VAR: message herex"):
        Lexer().expand_word("${VAR:?message here$ARG}", {"ARG": "x"})
    assert Lexer().expand_word("${VAR?message}", {"VAR": ""}) == ""


def test_error_names_the_word() -> None:
    with pytest.raises(ExpansionError, match=r'failed to process "he\$\{PWD": '):
        Lexer().expand_word("he${PWD", {})


@pytest.mark.parametrize(
    ("word", "env", "names"),
    [
        ("x", {"DUMMY": "d"}, set()),
        ("x ${UNUSED}", {}, {"UNUSED"}),
        ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, {"FOO", "BAR", "BAZ"}),
        ("${FOO:-$BAR}", {"FOO": "set"}, {"FOO", "BAR"}),
        ("'$FOO' \\$BAR", {}, set()),
        ("${FOO/$NEEDLE/$REPL}", {}, {"FOO", "NEEDLE", "REPL"}),
        ("$1 $#", {}, {"1", "#"}),
    ],
)
def test_tracking_reports_every_referenced_name(word: str, env: dict[str, str], names: set[str]) -> None:
    assert Lexer().expand_word_tracking(word, env)[1] == frozenset(names)


def test_process_gives_text_fields_and_names() -> None:
    result = Lexer().process("$A b", {"A": "1 2"})
    assert (result.text, result.fields, result.names) == ("1 2 b", ("1", "2", "b"), frozenset({"A"}))


BACKTICK_TABLE = [
    ("C:\\path\\$X", "C:\\path\\x"),
    ("`$X", "$X"),
    ("a` b", "a b"),
    ("``", "`"),
    ('"`"q"', '"q'),
    ('"`$X"', "$X"),
    ('"`a"', "`a"),
    ("${Y:-`}}", "}"),
    ("'`$X'", "`$X"),
]


@pytest.mark.parametrize(("word", "expected"), BACKTICK_TABLE)
def test_backtick_escape(word: str, expected: str) -> None:
    assert Lexer("`").expand_word(word, {"X": "x"}) == expected


def test_without_quote_processing_quotes_survive() -> None:
    lexer = Lexer(process_quotes=False)
    assert lexer.expand_word("say \"$A\" and '$A'\n", {"A": "hi"}) == "say \"hi\" and 'hi'\n"
    assert lexer.expand_word("a\\$A \\\\ \\n", {"A": "hi"}) == "a$A \\ n"


def test_lexer_rejects_bad_escape() -> None:
    with pytest.raises(ValueError):
        Lexer("ab")


def test_variables_are_case_sensitive() -> None:
    assert Lexer().expand_word("$home-$HOME", {"HOME": "/root"}) == "-/root"
