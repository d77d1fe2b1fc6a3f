"""Progress output: build --progress tty|plain|json|quiet, and pull/push status lines and bars."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import cli
from lamina.build import events
from lamina.cli.progress import (
    BarsTransfer,
    JsonRenderer,
    LiveRenderer,
    PlainTransfer,
    build_progress,
    event_json,
    resolve_mode,
    transfer_progress,
)
from lamina.cli.render import ClassicRenderer
from lamina.oci.digest import Digest
from lamina.transport.registry.events import BlobProgress, Resolved

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


@dataclass(frozen=True)
class FutureEvent:
    """A kind of event the renderers have never heard of (the library may add some any day)."""

    stage: str
    number: int
    reasons: tuple[str, ...]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_tty_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    assert resolve_mode("auto", io.StringIO()) == "plain"
    assert resolve_mode("auto", Terminal()) == "tty"
    assert resolve_mode("json", Terminal()) == "json"
    monkeypatch.setenv("TERM", "dumb")
    assert resolve_mode("auto", Terminal()) == "plain"


def test_event_json_covers_known_and_unknown_kinds() -> None:
    assert event_json(events.StepOutput("0", 2, b"hi \xff\n"), now=1.5) == {
        "type": "step_output", "time": 1.5, "stage": "0", "number": 2, "data": "hi \ufffd\n"}
    assert event_json(events.Warning_("careful"), now=0)["type"] == "warning"
    assert event_json(events.BuildDone("abc", ("app:1",), 1, 2, 0.5), now=0)["tags"] == ("app:1",)
    assert event_json(FutureEvent("0", 1, ("x",)), now=0) == {"type": "future_event", "time": 0, "stage": "0",
                                                               "number": 1, "reasons": ("x",)}
    assert event_json(object(), now=0) == {"type": "object", "time": 0}


def test_json_renderer_writes_one_object_per_line() -> None:
    out = io.StringIO()
    renderer = JsonRenderer(out)
    renderer(events.StepStarted("0", 1, 2, "FROM x"))
    renderer(FutureEvent("0", 1, ("why",)))
    renderer.error(ValueError("boom"))
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["type"] for d in docs] == ["step_started", "future_event", "error"]
    assert docs[2]["message"] == "boom"


def test_build_progress_picks_the_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    plain = ClassicRenderer(io.StringIO())
    with build_progress("plain", plain, Terminal()) as listener:
        assert listener is plain
    with build_progress("auto", plain, io.StringIO()) as listener:
        assert listener is plain
    quiet = ClassicRenderer(io.StringIO(), quiet=True)
    for mode in ("tty", "json", "quiet"):  # -q wins over any mode
        with build_progress(mode, quiet, Terminal()) as listener:
            assert listener is quiet
    out = io.StringIO()
    with pytest.raises(RuntimeError), build_progress("json", plain, out) as listener:
        listener(events.StepStarted("0", 1, 1, "RUN false"))
        raise RuntimeError("RUN false: returned a non-zero code: 1")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[-1]["type"] == "error" and "non-zero code" in lines[-1]["message"]


def test_plain_renderer_ignores_unknown_events() -> None:
    out = io.StringIO()
    renderer = ClassicRenderer(out)
    renderer(FutureEvent("0", 1, ("x",)))
    renderer(object())  # type: ignore[arg-type]
    assert out.getvalue() == ""


def _console(out: io.StringIO):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(file=out, force_terminal=True, width=100, color_system=None)


def _frame(view: LiveRenderer) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(view)
    return out.getvalue()


def test_live_view_shows_running_steps_tails_and_collapses_finished_ones() -> None:
    out = io.StringIO()
    with LiveRenderer(_console(out)) as view:
        view(events.StepStarted("0", 1, 4, "FROM busybox"))
        view(events.StepDone("0", 1, "aaa", 0.01, False))
        view(events.StepStarted("0", 2, 4, "COPY  a\n b"))
        view(events.StepCached("0", 2))
        view(events.StepDone("0", 2, "bbb", 0.0, True))
        view(events.StepStarted("builder", 3, 4, "RUN make"))
        view(FutureEvent("builder", 3, ("file a changed", "arg X changed")))
        for i in range(1, 10):
            view(events.StepOutput("builder", 3, f"line {i}\n".encode()))
        view(events.StepOutput("builder", 3, b"\x1b[31mred\x1b[0m 10%\r100%"))
        frame = _frame(view)
        assert "[builder 3/4] RUN make" in frame and "cache miss: file a changed" in frame
        assert "arg X changed" not in frame  # the first, most useful reason only
        assert [ln.strip() for ln in frame.splitlines()[2:8]] == ["line 5", "line 6", "line 7", "line 8", "line 9",
                                                                  "100%"]  # after the \r, no escapes
        assert frame.splitlines()[-1].startswith("[+] Building") and "(2/4)" in frame
        view(events.Warning_("one or more build-args were not consumed"))
        view(object())
        view(events.StepDone("builder", 3, "ccc", 2.5, False))
        view(events.BuildDone("ccc", ("app:1",), 1, 3, 3.0))
    text = ESCAPES.sub("", out.getvalue())
    assert re.search(r" => \[1/4\] FROM busybox +0\.0s", text)
    assert " => CACHED [2/4] COPY a b" in text
    assert re.search(r" => \[builder 3/4\] RUN make +2\.5s", text)
    assert "WARNING: one or more build-args were not consumed" in text
    assert "writing image sha256:ccc" in text and "naming to app:1" in text
    assert text.rstrip().splitlines()[-1].endswith("(3/4) FINISHED")


def test_output_lines_as_a_terminal_shows_them() -> None:
    from lamina.cli.progress import _Step

    step = _Step(events.StepStarted("0", 1, 1, "RUN x"))
    for chunk in (b"a\r", b"\nb 10%\rb 20%\r", b"b 30%", b"\r\n", b"\x1b[1mbold\x1b[0m\n", b"x" * 10000):
        step.feed(chunk)
    assert list(step.lines) == ["a", "b 30%", "bold"]  # CRLF ends a line; \r alone redraws it
    assert len(step.partial) == 4096  # an endless line is cut, never hoarded
    assert step.tail(2) == ["bold", "x" * 4096]


def test_live_view_leaves_a_failed_step_and_its_last_lines() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), LiveRenderer(_console(out)) as view:
        view(events.StepStarted("0", 1, 2, "RUN false"))
        view(events.StepOutput("0", 1, b"".join(b"out %d\n" % i for i in range(30)) + b"last words"))
        raise RuntimeError("failed")
    text = ESCAPES.sub("", out.getvalue())
    assert " => ERROR [1/2] RUN false" in text
    tail = [ln for ln in text.splitlines() if ln.startswith("  > ")]
    assert tail[-1] == "  > last words" and tail[0] == "  > out 11" and len(tail) == 20
    assert text.rstrip().splitlines()[-1].endswith("(0/2) FAILED")


def test_live_view_with_explain_prints_every_reason() -> None:
    out = io.StringIO()
    with LiveRenderer(_console(out), explain=True) as view:
        view(events.StepStarted("0", 1, 1, "COPY . /app"))
        view(FutureEvent("0", 1, ("file a changed", "arg X changed")))
        view(events.StepDone("0", 1, "x", 0.1, False))
    text = ESCAPES.sub("", out.getvalue())
    assert "cache miss: file a changed" in text and "cache miss: arg X changed" in text


DIGEST = Digest("sha256", "ab" * 32)
OTHER = Digest("sha256", "cd" * 32)


def test_plain_transfer_lines_like_docker() -> None:
    out = io.StringIO()
    lines = PlainTransfer("pull", out)
    lines(Resolved("x", DIGEST, "application/vnd.oci.image.manifest.v1+json"))
    lines(BlobProgress(DIGEST, "config", "complete", 1, 1))
    for done in (0, 5, 10):
        lines(BlobProgress(DIGEST, "layer", "transferring", done, 10))
    lines(BlobProgress(DIGEST, "layer", "complete", 10, 10))
    lines(BlobProgress(OTHER, "layer", "exists", 3, 3))
    lines(FutureEvent("0", 1, ()))
    assert out.getvalue().splitlines() == ["abababababab: Pulling fs layer", "abababababab: Pull complete",
                                           "cdcdcdcdcdcd: Already exists"]
    out = io.StringIO()
    push = PlainTransfer("push", out)
    push(BlobProgress(DIGEST, "layer", "transferring", 0, 10))
    push(BlobProgress(DIGEST, "layer", "complete", 10, 10))
    push(BlobProgress(OTHER, "layer", "mounted", 3, 3))
    assert out.getvalue().splitlines() == ["abababababab: Pushing", "abababababab: Pushed",
                                           "cdcdcdcdcdcd: Mounted from another repository"]


def test_bars_follow_each_layer() -> None:
    from rich.progress import Progress

    with Progress(console=_console(io.StringIO())) as progress:
        bars = BarsTransfer("push", progress)
        bars(BlobProgress(DIGEST, "layer", "transferring", 4, 10))
        bars(BlobProgress(OTHER, "layer", "exists", 0, 3))
        bars(BlobProgress(OTHER, "config", "complete", 1, 1))
        bars(Resolved("x", DIGEST, "m"))
        tasks = {t.description: t for t in progress.tasks}
    assert set(tasks) == {"abababababab", "cdcdcdcdcdcd"}
    assert (tasks["abababababab"].completed, tasks["abababababab"].total) == (4, 10)
    assert tasks["abababababab"].fields["status"] == "Pushing"
    assert tasks["cdcdcdcdcdcd"].completed == 3 and tasks["cdcdcdcdcdcd"].fields["status"] == "Layer already exists"


def test_transfer_progress_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    with transfer_progress("pull", quiet=True, out=Terminal()) as callback:
        assert callback is None
    with transfer_progress("pull", out=io.StringIO()) as callback:
        assert isinstance(callback, PlainTransfer)
    with transfer_progress("push", out=Terminal()) as callback:
        assert isinstance(callback, BarsTransfer)


# the command, for real ---------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers.images import busybox_rootfs_tar

    (tmp_path / "rootfs.tar").write_bytes(busybox_rootfs_tar())
    lamina(tmp_path, "import", "-c", "ENV PATH=/bin", str(tmp_path / "rootfs.tar"), "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo one && echo two\nCOPY Dockerfile /d\n")
    return tmp_path


def lamina(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LAMINA_PROGRESS"}
    return cli.lamina(tmp / "store", *args, check=check, environ=env)


def on_a_terminal(tmp: Path, *args: str) -> tuple[int, str]:
    """Run lamina with stdout and stderr on a pseudo-terminal; its exit code and what it drew."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "lamina", "--root", str(tmp / "store"), *args],
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), ESCAPES.sub("", b"".join(chunks).decode("utf-8", "replace"))


@pytest.mark.integration
@needs_root
def test_build_progress_modes(project: Path) -> None:
    ctx = str(project / "ctx")
    plain = lamina(project, "build", "-t", "app:1", ctx).stdout  # not a terminal: plain
    assert "Step 2/3 : RUN echo one && echo two" in plain and "one\ntwo\n" in plain
    lines = lamina(project, "build", "--progress", "json", "-t", "app:1", ctx).stdout.splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["type"] for d in docs if d["type"] != "cache_miss"] == [
        "step_started", "step_done", "step_started", "step_cached", "step_done", "step_started", "step_cached",
        "step_done", "build_done"]
    assert docs[-1]["tags"] == ["app:1"]
    quiet = lamina(project, "build", "--progress", "quiet", "-t", "app:1", ctx).stdout
    assert quiet.strip() == docs[-1]["image_id"] or quiet.strip().startswith("sha256:")
    code, screen = on_a_terminal(project, "build", "--no-cache", "-t", "app:2", ctx)
    assert code == 0, screen
    assert re.search(r" => \[2/3\] RUN echo one && echo two +\d+\.\ds", screen)
    assert "naming to app:2" in screen and "(3/3) FINISHED" in screen
    assert "Step 2/3" not in screen
    (project / "ctx" / "Dockerfile").write_text("FROM busybox:test\nRUN echo doomed; exit 4\n")
    code, screen = on_a_terminal(project, "build", ctx)
    assert code == 1
    assert " => ERROR [2/2] RUN echo doomed; exit 4" in screen and "  > doomed" in screen
    assert "FAILED" in screen and "Error: Dockerfile:2:" in screen and "Traceback" not in screen


@pytest.mark.integration
@needs_root
def test_push_and_pull_print_layer_lines(project: Path, tmp_path: Path) -> None:
    from helpers.registry import running_registry

    lamina(project, "build", "-t", "app:1", str(project / "ctx"))
    with running_registry(tmp_path / "registry") as reg:
        name = f"{reg.host}/demo/app:1"
        lamina(project, "tag", "app:1", name)
        pushed = lamina(project, "push", name).stdout.splitlines()
        layer_lines = [ln for ln in pushed if re.fullmatch(r"[0-9a-f]{12}: .*", ln)]
        assert {ln.split(": ")[1] for ln in layer_lines} == {"Pushing", "Pushed"}
        assert len(layer_lines) == 2 * 3  # base, RUN and COPY layers
        again = lamina(project, "push", name).stdout
        assert again.count(": Layer already exists") == 3
        pulled = lamina(tmp_path / "other", "pull", name).stdout
        assert pulled.count(": Pull complete") == 3 and pulled.count(": Pulling fs layer") == 3
        code, screen = on_a_terminal(tmp_path / "third", "pull", name)
        assert code == 0 and screen.count("Pull complete") >= 3 and "━" in screen
