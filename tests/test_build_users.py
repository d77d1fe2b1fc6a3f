"""USER and --chown specs against a fake image /etc."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.users import parse_chown, resolve_user
from lamina.errors import BuildError

PASSWD = """root:x:0:0:root:/root:/bin/sh
# comment
app:x:1234:2345::/home/app:/bin/sh
daemon:x:2:2:daemon:/sbin:/bin/false
broken-line
"""
GROUP = """root:x:0:
app:x:2345:
staff:x:50:app,daemon
wheel:x:10:app
"""


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "real-etc").mkdir()
    (tmp_path / "real-etc/passwd").write_text(PASSWD)
    (tmp_path / "real-etc/group").write_text(GROUP)
    (tmp_path / "etc").symlink_to("/real-etc")  # absolute link: must resolve inside the root
    return tmp_path


@pytest.mark.parametrize(("spec", "expected"), [
    ("", (0, 0, ())),
    ("app", (1234, 2345, (50, 10))),
    ("1234", (1234, 2345, (50, 10))),
    ("4242", (4242, 0, ())),
    ("app:staff", (1234, 50, ())),
    ("app:77", (1234, 77, ())),
    ("1234:staff", (1234, 50, ())),
    ("99:98", (99, 98, ())),
    ("daemon", (2, 2, (50,))),
])
def test_resolve_user(root: Path, spec: str, expected: tuple[int, int, tuple[int, ...]]) -> None:
    assert resolve_user(root, spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("nobody", "unable to find user nobody: no matching entries in passwd file"),
    ("app:nogroup", "unable to find group nogroup"),
    (":staff", "invalid user spec"),
])
def test_resolve_user_errors(root: Path, spec: str, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        resolve_user(root, spec)


@pytest.mark.parametrize(("spec", "expected"), [  # 049
    ("app:app", (1234, 2345)),
    ("app", (1234, 2345)),
    ("app:staff", (1234, 50)),
    ("1234:staff", (1234, 50)),
    ("1234", (1234, 1234)),
    ("7:8", (7, 8)),
    (":77", (0, 77)),  # an empty side is id 0, as in BuildKit
    ("88:", (88, 0)),
    (":staff", (0, 50)),
    ("app:", (1234, 0)),
])
def test_parse_chown(root: Path, spec: str, expected: tuple[int, int]) -> None:
    assert parse_chown(root, spec) == expected


def test_parse_chown_unknown_name(root: Path) -> None:
    with pytest.raises(BuildError, match="unable to find user ghost"):
        parse_chown(root, "ghost")


def test_no_etc_files(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "5") == (5, 0, ())
    with pytest.raises(BuildError):
        resolve_user(tmp_path, "app")
