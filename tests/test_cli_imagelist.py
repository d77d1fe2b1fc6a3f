"""`lamina images` rows, filters and docker's reference patterns (pure parts)."""

from __future__ import annotations

import pytest

from lamina.cli.imagelist import Filters, parse_filters, reference_matches
from lamina.errors import LaminaError
from lamina.oci.reference import Reference

# pattern, reference → matches (docker's reference.FamiliarMatch over path.Match)
MATCHES = [
    ("busybox", "busybox:latest", True),
    ("busybox", "busybox:1.36", True),  # the name alone matches every tag
    ("busybox:1.36", "busybox:latest", False),
    ("busybox:1.*", "busybox:1.36", True),
    ("busy*", "busybox:latest", True),
    ("*", "busybox:latest", True),
    ("*", "team/app:1", False),  # * stops at /
    ("*/*", "team/app:1", True),
    ("team/*:1", "team/app:1", True),
    ("team/*:1", "team/app:2", False),
    ("localhost:5000/*", "localhost:5000/app:v1", True),
    ("docker.io/library/busybox", "busybox:latest", False),  # familiar names only, as docker
    ("b?sybox", "busybox:latest", True),
    ("[ab]usybox", "busybox:latest", True),
    ("[^b]usybox", "busybox:latest", False),
    ("app\\*", "appx:1", False),  # the escape makes * literal
    ("app\\.x", "app.x:1", True),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), MATCHES)
def test_reference_matches(pattern: str, name: str, expected: bool) -> None:
    assert reference_matches(pattern, Reference.parse(name)) is expected


def test_parse_filters() -> None:
    assert parse_filters([]) == Filters()
    parsed = parse_filters(["dangling=true", "reference=a*", "reference=b", "label=x=1", "before=app:1",
                            "since=app:0"])
    assert parsed == Filters(True, ("a*", "b"), ("x=1",), "app:1", "app:0")
    assert parse_filters(["dangling=false"]).dangling is False


@pytest.mark.parametrize(("items", "message"), [
    (["color=red"], "invalid filter 'color=red'"),
    (["dangling"], "invalid filter 'dangling'"),
    (["dangling=maybe"], "expected true or false"),
    (["before=a", "before=b"], "takes one image"),
])
def test_bad_filters(items: list[str], message: str) -> None:
    with pytest.raises(LaminaError, match=message):
        parse_filters(items)
