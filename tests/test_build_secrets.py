"""build --secret: the command sees the secret; no layer, blob, record, log, history or registry does."""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import shutil
from pathlib import Path

import pytest

from helpers.cli import lamina
from helpers.images import import_busybox
from helpers.registry import running_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    import_busybox(tmp_path / "store", tmp_path)
    return tmp_path / "store"


def _files_containing(top: Path, needles: tuple[bytes, ...]) -> list[str]:
    """Every file under ``top`` holding a needle, also inside gzip-compressed blobs."""
    found = []
    for path in top.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            with contextlib.suppress(OSError, EOFError):
                data += gzip.decompress(data)
        if any(n in data for n in needles):
            found.append(str(path.relative_to(top)))
    return found


def test_secret_reaches_the_command_and_nothing_else(base: Path, tmp_path: Path) -> None:
    file_secret = "file-" + secrets.token_hex(16)
    env_secret = "env-" + secrets.token_hex(16)
    (tmp_path / "token").write_text(file_secret + "\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox:test\n"
        "RUN --mount=type=secret,id=tok grep -q ^file- /run/secrets/tok "
        "&& stat -c '%a %u' /run/secrets/tok && cat /run/secrets/tok\n"
        "RUN --mount=type=secret,id=api,env=API_KEY,required=true "
        "sh -c 'echo \"key=$API_KEY\"; printf %s \"$API_KEY\" | wc -c'\n"
        "RUN --mount=type=secret,id=tok,target=/etc/app/key,mode=0440,uid=1 stat -c '%a %u' /etc/app/key\n"
        "RUN --mount=type=secret,id=absent ls /run/secrets 2>&1 || echo none\n"
        "RUN echo done > /done\n")
    with running_registry(tmp_path / "registry") as reg:
        name = f"{reg.host}/secret/app:1"
        built = lamina(base, "build", "-t", name, "--secret", f"id=tok,src={tmp_path / 'token'}",
                       "--secret", "id=api,env=LAMINA_TEST_API_KEY", str(ctx),
                       env={"LAMINA_TEST_API_KEY": env_secret})
        assert "400 0\n****\n" in built.stdout                       # visible to the command, redacted in output
        assert f"key=****\n{len(env_secret)}\n" in built.stdout
        assert "440 1\n" in built.stdout and "none\n" in built.stdout
        lamina(base, "push", name)
        needles = (file_secret.encode(), env_secret.encode())
        seen = built.stdout + built.stderr
        for args in (("history", "--no-trunc", name), ("inspect", name)):
            seen += lamina(base, *args).stdout
        assert not any(n.decode() in seen for n in needles)
        assert _files_containing(base, needles) == []                 # blobs, snapshots, lamina.db, logs
        assert _files_containing(tmp_path / "registry", needles) == []
    assert not list((base / "tmp").iterdir())
    assert not list((base / "mounts").glob("mnt-*"))
    rebuilt = lamina(base, "build", "-t", "again", "--secret", f"id=tok,src={tmp_path / 'token'}",
                     "--secret", "id=api,env=LAMINA_TEST_API_KEY", str(ctx), env={"LAMINA_TEST_API_KEY": "x"})
    assert rebuilt.stdout.count("Using cache") == 5                   # a secret's value is not in the key


def test_a_missing_required_secret_is_a_one_line_error(base: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN --mount=type=secret,id=tok,required true\n")
    failed = lamina(base, "build", str(ctx), check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip().startswith("Error: Dockerfile:2: RUN true: secret tok not found")
    assert len(failed.stderr.strip().splitlines()) == 1
    failed = lamina(base, "build", "--secret", "id=tok,env=LAMINA_TEST_UNSET_VARIABLE", str(ctx), check=False)
    assert "secret environment variable LAMINA_TEST_UNSET_VARIABLE is not set" in failed.stderr
    bad = lamina(base, "build", "--secret", "src=/x", str(ctx), check=False)
    assert bad.returncode == 1 and "id=… is required" in bad.stderr and "Traceback" not in bad.stderr
