"""Which steps a change rebuilds (issue #5): exactly the changed step and those after it, no others.

Each case builds once, applies one edit (a source file, an instruction, a build arg, a
.dockerignore line, a file mode) and rebuilds, then compares the set of steps that ran with
what Docker's cache rules say must run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.images import busybox_image
from lamina import api
from lamina.build import events
from lamina.build.options import BuildOptions
from lamina.store.store import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]

DOCKERFILE = """\
FROM busybox:test
ARG VERSION=1
ENV MODE=prod
COPY config/ /etc/app/
RUN echo "v$VERSION" > /version
COPY src/ /app/
RUN ls -l /app > /listing
CMD ["sh"]
"""
# step numbers: 1 FROM, 2 ARG, 3 ENV, 4 COPY config, 5 RUN version, 6 COPY src, 7 RUN ls, 8 CMD


def _context(root: Path) -> Path:
    (root / "config").mkdir(parents=True)
    (root / "config" / "app.conf").write_text("port=80\n")
    (root / "src").mkdir()
    (root / "src" / "main.sh").write_text("echo main\n")
    (root / "src" / "util.sh").write_text("echo util\n")
    (root / "notes.md").write_text("not copied\n")
    (root / ".dockerignore").write_text("*.md\n")
    (root / "Dockerfile").write_text(DOCKERFILE)
    return root


def _ran(store: Store, ctx: Path, **kw: object) -> list[int]:
    seen: list[events.Event] = []
    api.build(store, BuildOptions(context=ctx, tags=("app:latest",), **kw), listener=seen.append)  # type: ignore[arg-type]
    froms = {e.number for e in seen if isinstance(e, events.StepStarted) and e.text.upper().startswith("FROM")}
    done = [e for e in seen if isinstance(e, events.StepDone)]
    return sorted(e.number for e in done if not e.cached and e.number not in froms)


def _edit_source(ctx: Path) -> None:
    (ctx / "src" / "util.sh").write_text("echo changed\n")


def _edit_instruction(ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("ENV MODE=prod", "ENV MODE=dev"))


def _edit_ignore_of_copied(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("*.md\nsrc/util.sh\n")


def _edit_ignore_of_uncopied(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("*.md\n*.txt\n")


def _edit_mode(ctx: Path) -> None:
    (ctx / "src" / "main.sh").chmod(0o755)


def _edit_ignored_file(ctx: Path) -> None:
    (ctx / "notes.md").write_text("edited, but ignored\n")


def _touch(ctx: Path) -> None:
    os.utime(ctx / "src" / "main.sh", (1, 1))


CASES: list[tuple[str, Callable[[Path], None], dict[str, object], list[int]]] = [
    ("nothing changed", lambda ctx: None, {}, []),
    ("a copied file's content", _edit_source, {}, [6, 7, 8]),
    ("an instruction", _edit_instruction, {}, [3, 4, 5, 6, 7, 8]),
    # docker: a changed ARG value misses at its first use (the RUN that sees it), not at the ARG
    ("a build arg", lambda ctx: None, {"build_args": {"VERSION": "2"}}, [5, 6, 7, 8]),
    (".dockerignore excludes a copied file", _edit_ignore_of_copied, {}, [6, 7, 8]),
    (".dockerignore excludes nothing copied", _edit_ignore_of_uncopied, {}, []),
    ("a copied file's mode", _edit_mode, {}, [6, 7, 8]),
    ("an ignored file", _edit_ignored_file, {}, []),
    ("only an mtime", _touch, {}, []),
]


@pytest.mark.parametrize(("what", "edit", "options", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_change_rebuilds_its_step_and_those_after_only(tmp_path: Path, what: str, edit: Callable[[Path], None],
                                                         options: dict[str, object], expected: list[int]) -> None:
    store = Store(tmp_path / "store")
    busybox_image(store, "busybox:test")
    ctx = _context(tmp_path / "ctx")
    assert _ran(store, ctx) == [2, 3, 4, 5, 6, 7, 8]
    edit(ctx)
    assert _ran(store, ctx, **options) == expected, what


def test_no_cache_filter_rebuilds_only_the_named_stage(tmp_path: Path) -> None:
    """``--no-cache-filter deps``: that stage's steps run again; the others come from the cache."""
    store = Store(tmp_path / "store")
    busybox_image(store, "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox:test AS deps\nRUN echo deps > /deps\n"
        "FROM busybox:test AS tools\nRUN cat /proc/sys/kernel/random/uuid > /tools\n"
        "FROM busybox:test\nCOPY --from=tools /tools /tools\nRUN echo final > /final\n")
    first = _ran(store, ctx, target="deps")
    assert first == [2]
    assert _ran(store, ctx) == [4, 6, 7]
    # the rebuilt stage made new content, so what copies from it runs again;
    # a stage the target does not need is not built at all
    assert _ran(store, ctx, no_cache_filter=("tools",)) == [4, 6, 7]
    assert _ran(store, ctx, no_cache_filter=("deps", "tools")) == [4, 6, 7]
    assert _ran(store, ctx, target="deps", no_cache_filter=("deps",)) == [2]
    # records keep the first build's layers, so a normal build still hits throughout
    assert _ran(store, ctx) == []


def test_a_rerun_with_the_same_content_keeps_later_steps_cached(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    busybox_image(store, "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test AS tools\nRUN echo tools > /tools && touch -d @0 /tools\n"
                                    "FROM busybox:test\nCOPY --from=tools /tools /tools\n")
    assert _ran(store, ctx, timestamp=0) == [2, 4]
    assert _ran(store, ctx, timestamp=0, no_cache_filter=("tools",)) == [2]
