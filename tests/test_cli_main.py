"""The command group: subcommands load on demand, and a cached build imports only what it needs."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cliutil import invoke
from lamina.cli.main import COMMAND_MODULES, cli

# what a fully cached `lamina build` must not import: the step machinery, transports, other commands
NOT_ON_THE_CACHED_PATH = (
    "lamina.snapshot", "lamina.runtime", "lamina.build.copy", "lamina.image.layerio", "lamina.transport",
    "lamina.cli.image_cmds", "lamina.cli.registry_cmds", "lamina.cli.run_cmd",
    "httpx", "rich", "isal", "zstandard", "tarfile", "ctypes", "concurrent", "shutil", "click",
)


def test_the_table_names_every_command_of_every_module() -> None:
    modules = sorted(p.stem for p in Path(importlib.import_module("lamina.cli").__path__[0]).glob("*.py"))
    found = {}
    for name in modules:
        module = importlib.import_module(f"lamina.cli.{name}")
        for command in getattr(module, "COMMANDS", ()):
            found[command.name] = name
    assert found == COMMAND_MODULES


def _imported_after(*argv: str) -> set[str]:
    code = ("import sys, json\nfrom lamina.cli.main import cli\n"
            f"cli.main({list(argv)!r}, prog_name='lamina')\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    return set(json.loads(out.stdout.splitlines()[-1]))


def _offending(modules: set[str], forbidden: tuple[str, ...] = NOT_ON_THE_CACHED_PATH) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in forbidden))


def _store_and_context(tmp_path: Path, dockerfile: str) -> tuple[Path, Path]:
    """A store holding busybox:test, and a context with ``dockerfile`` and an ``app.sh``."""
    from helpers.images import busybox_image
    from lamina.store.store import Store

    root = tmp_path / "store"
    busybox_image(Store(root), "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.sh").write_text("echo hi\n")
    (ctx / "Dockerfile").write_text(dockerfile)
    return root, ctx


def test_a_command_loads_only_its_own_module() -> None:
    modules = _imported_after("build", "--help")
    assert "lamina.cli.build_cmd" in modules
    assert {"lamina.cli.image_cmds", "lamina.cli.registry_cmds", "lamina.cli.run_cmd"}.isdisjoint(modules)


def test_help_lists_every_command_and_typos_get_suggestions() -> None:
    listed = invoke(cli, ["--help"])
    assert listed.exit_code == 0
    for name in COMMAND_MODULES:
        assert f"\n  {name} " in listed.stdout
    wrong = invoke(cli, ["histroy"])
    assert wrong.exit_code == 2 and wrong.stdout == ""
    assert wrong.stderr == "Error: no such command 'histroy'. Did you mean 'history'?\nSee 'lamina --help'.\n"


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")
def test_a_fully_cached_build_imports_only_what_it_needs(tmp_path: Path) -> None:
    root, ctx = _store_and_context(tmp_path, "FROM busybox:test\nENV A=1\nWORKDIR /app\nCOPY app.sh /app/\n"
                                             "RUN chmod +x /app/app.sh\nLABEL x=y\nCMD [\"/app/app.sh\"]\n")
    argv = ("--root", str(root), "build", "-q", "-t", "app", str(ctx))
    assert "lamina.runtime.runc" in _imported_after(*argv)  # the first build runs its steps
    assert _offending(_imported_after(*argv)) == []


NOT_ON_THE_MEMO_PATH = ("lamina.build.builder", "lamina.dockerfile", "lamina.oci", "lamina.image",
                        "lamina.store.store", "_hashlib", *NOT_ON_THE_CACHED_PATH)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")
def test_a_memoized_build_loads_neither_the_builder_nor_the_models(tmp_path: Path) -> None:
    """build/memo.py: an unchanged rebuild is answered before the Dockerfile or image model loads."""
    import time

    root, ctx = _store_and_context(tmp_path, "FROM busybox:test\nCOPY app.sh /app/\nRUN chmod +x /app/app.sh\n")
    time.sleep(1.2)  # older than the build by more than memo.RACY_NS
    argv = ("--root", str(root), "build", "-q", "-t", "app", str(ctx))
    assert "lamina.build.builder" in _imported_after(*argv)  # the first build runs, and leaves its memo
    loaded = _imported_after(*argv)
    assert "lamina.build.memo" in loaded
    assert _offending(loaded, NOT_ON_THE_MEMO_PATH) == []


NOT_ON_THE_QUIET_PUSH_PATH = ("lamina.cli.progress", "lamina.build", "lamina.transport.registry.pull",
                              "lamina.image.layersize", "lamina.oci.config", "concurrent", "rich", "httpx",
                              # a loopback registry that never challenges: no token machinery, no settings
                              "lamina.transport.registry.auth", "lamina.transport.mirrors",
                              # the HTTP of our own (transport/wire.py), plain http: no TLS, no idna
                              "http.client", "email", "ssl", "encodings.idna", "click", "shutil", "base64")


@pytest.mark.integration
def test_a_quiet_push_loads_no_renderer_pull_side_or_config_model(tmp_path: Path) -> None:
    from helpers.images import busybox_image
    from helpers.registry import running_registry
    from lamina.store.store import Store

    root = tmp_path / "store"
    busybox_image(Store(root), "busybox:test")
    with running_registry(tmp_path / "registry") as reg:
        loaded = _imported_after("--root", str(root), "push", "-q", "busybox:test", f"{reg.host}/quiet:1")
        import urllib.request

        head = urllib.request.Request(f"http://{reg.host}/v2/quiet/manifests/1", method="HEAD", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        assert urllib.request.urlopen(head, timeout=10).status == 200  # it did push
    assert "lamina.transport.registry.push" in loaded
    assert _offending(loaded, NOT_ON_THE_QUIET_PUSH_PATH) == []
