"""Progress on the terminal: build steps (``--progress auto|tty|plain|json|quiet``) and transfers.

Like BuildKit: ``tty`` is a live view (rich) of the running steps and their last
output lines, each finished step collapsing to one line with its time or CACHED;
``plain`` is the classic line output (:mod:`lamina.cli.render`), what CI sees;
``json`` is one object per event per line. ``auto`` picks ``tty`` on a terminal.
Pulls and pushes get a bar per layer on a terminal and docker's status lines
otherwise. Every renderer ignores events it does not know, so the library can
add kinds freely. Events may come from several threads: renderers lock.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from typing import Any, TextIO

from lamina.build import events

MODES = ("auto", "tty", "plain", "json", "quiet")
TAIL = 6          # output lines of a running step shown live
ERROR_TAIL = 20   # output lines kept to show under a failed step
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def is_terminal(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def resolve_mode(mode: str, stream: TextIO) -> str:
    """``auto`` → ``tty`` on a terminal, else ``plain``; other modes as given."""
    if mode == "auto":
        return "tty" if is_terminal(stream) else "plain"
    return mode


@contextmanager
def build_progress(mode: str, plain: events.Listener, out: TextIO | None = None) -> Iterator[events.Listener]:
    """The listener for a build in ``mode``; ``plain`` serves ``plain`` and ``quiet`` (and ``-q`` always).

    A live view is stopped on the way out, an error leaving the failed step and its last lines on screen.
    """
    stream = out or sys.stdout
    chosen = resolve_mode(mode, stream)
    explain = bool(getattr(plain, "explain", False))
    if chosen in ("plain", "quiet") or getattr(plain, "quiet", False):
        yield plain
    elif chosen == "json":
        renderer = JsonRenderer(stream)
        try:
            yield renderer
        except BaseException as exc:
            renderer.error(exc)
            raise
    else:
        from rich.console import Console

        with LiveRenderer(Console(file=stream, highlight=False), explain=explain) as live:
            yield live


# json ------------------------------------------------------------------------------------------

def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.rstrip("_")).lower()


def event_json(event: object, now: float | None = None) -> dict[str, Any]:
    """Any event as a JSON object: ``type`` (snake case), ``time`` (epoch seconds), then its fields."""
    out: dict[str, Any] = {"type": _snake(type(event).__name__), "time": round(time.time() if now is None else now, 6)}
    if is_dataclass(event):
        for f in fields(event):
            value = getattr(event, f.name)
            out[f.name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out


class JsonRenderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    def __call__(self, event: object) -> None:
        self._write(event_json(event))

    def error(self, exc: BaseException) -> None:
        """The build failed: a last object says why (the CLI still prints its one-line error)."""
        self._write({"type": "error", "time": round(time.time(), 6), "message": str(exc) or type(exc).__name__})

    def _write(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.out.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
            self.out.flush()


# tty -------------------------------------------------------------------------------------------

class _Step:
    __slots__ = ("cached", "label", "lines", "number", "partial", "reasons", "seconds", "started", "text", "total")

    def __init__(self, event: events.StepStarted) -> None:
        self.label, self.number, self.total, self.text = event.stage, event.number, event.total, event.text
        self.started = time.monotonic()
        self.seconds: float | None = None
        self.cached = False
        self.reasons: tuple[str, ...] = ()  # why it missed the cache, when the builder says
        self.lines: deque[str] = deque(maxlen=ERROR_TAIL)
        self.partial = ""

    @property
    def name(self) -> str:
        stage = "" if self.label.isdigit() or not self.label else f"{self.label} "
        return f"[{stage}{self.number}/{self.total}] {' '.join(self.text.split())}"

    def feed(self, data: bytes) -> None:
        text = self.partial + data.decode("utf-8", "replace")
        *complete, partial = text.split("\n")
        for line in complete:
            self.lines.append(_clean(line))
        # a progress bar redraws one line with \r for minutes: keep only what a terminal would show
        redraw = partial.rfind("\r", 0, len(partial) - 1)  # a last \r may be half of a \r\n
        self.partial = partial[redraw + 1:][-4096:]

    def tail(self, n: int) -> list[str]:
        last = [_clean(self.partial)] if self.partial.strip() else []
        return (list(self.lines) + last)[-n:]


def _clean(line: str) -> str:
    """What a terminal would show of a line: the text after the last carriage return, no escapes."""
    return _ANSI.sub("", line.rstrip("\r").rsplit("\r", 1)[-1])


class LiveRenderer:
    """The live build view; use as a context manager around the build."""

    def __init__(self, console: Any, *, explain: bool = False) -> None:
        self.console = console
        self.explain = explain  # every reason of a cache miss, not just the first
        self._lock = threading.RLock()
        self._running: dict[tuple[str, int], _Step] = {}
        self._finished = 0
        self._total = 0
        self._started = time.monotonic()
        self._state = ""  # "", "FINISHED" or "FAILED"
        self._live: Any = None

    def __enter__(self) -> LiveRenderer:
        from rich.live import Live

        self._live = Live(self, console=self.console, refresh_per_second=8, transient=False)
        self._live.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        printed: list[Any] = []
        with self._lock:
            if exc is not None:
                self._state = "FAILED"
                for step in self._running.values():
                    printed.append(self._line(step, "ERROR", "bold red"))
                    printed.extend(self._tail(step, ERROR_TAIL, "  > "))
                self._running.clear()
        self._print(printed)
        if self._live is not None:
            self._live.stop()

    def __call__(self, event: object) -> None:
        printed: list[Any] = []
        with self._lock:
            self._apply(event, printed)
        self._print(printed)

    def _apply(self, event: object, printed: list[Any]) -> None:
        match event:
            case events.StepStarted():
                self._running[(event.stage, event.number)] = _Step(event)
                self._total = max(self._total, event.total)
            case events.StepOutput():
                if (step := self._running.get((event.stage, event.number))) is not None:
                    step.feed(event.data)
            case events.StepCached():
                if (step := self._running.get((event.stage, event.number))) is not None:
                    step.cached = True
            case events.StepDone():
                step = self._running.pop((event.stage, event.number), None)
                if step is not None:
                    step.seconds, step.cached = event.seconds, step.cached or event.cached
                    self._finished += 1
                    printed.append(self._line(step, "CACHED" if step.cached else "", "blue"))
                    printed.extend(self._reasons(step, None if self.explain else 1))
            case events.Warning_():
                from rich.text import Text

                printed.append(Text(f"WARNING: {event.message}", "yellow"))
            case events.BuildDone():
                from rich.text import Text

                self._state = "FINISHED"
                printed.append(self._row(Text(" => exporting to image", "blue"), ""))
                printed.append(Text(f" => => writing image sha256:{event.image_id}", "dim"))
                printed.extend(Text(f" => => naming to {tag}", "dim") for tag in event.tags)
            case _:
                self._unknown(event)

    def _unknown(self, event: object) -> None:
        """A kind this view does not know: reasons it carries (a cache miss's, say) go under its step."""
        key = (getattr(event, "stage", None), getattr(event, "number", None))
        reasons = getattr(event, "reasons", None)
        step = self._running.get(key)  # type: ignore[arg-type]
        if step is not None and isinstance(reasons, tuple | list) and reasons:
            step.reasons = tuple(str(r) for r in reasons)

    def _reasons(self, step: _Step, n: int | None) -> list[Any]:
        from rich.text import Text

        return [Text(f"    cache miss: {reason}", "yellow", no_wrap=True, overflow="ellipsis")
                for reason in step.reasons[:n]]

    def _print(self, renderables: list[Any]) -> None:
        if renderables:  # outside the lock: rich's refresh thread takes its own, then ours
            from rich.console import Group

            self.console.print(Group(*renderables))

    def _row(self, left: Any, right: str) -> Any:
        from rich.table import Table

        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        grid.add_row(left, right)
        return grid

    def _line(self, step: _Step, mark: str, style: str) -> Any:
        from rich.text import Text

        left = Text(" => ", style)
        if mark:
            left.append(f"{mark} ", "bold" if mark == "ERROR" else style)
        left.append(step.name, style if mark != "ERROR" else "red")
        seconds = step.seconds if step.seconds is not None else time.monotonic() - step.started
        return self._row(left, "" if mark == "CACHED" else f"{seconds:.1f}s")

    def _tail(self, step: _Step, n: int, prefix: str) -> list[Any]:
        from rich.text import Text

        return [Text(f"{prefix}{line}", "dim", no_wrap=True, overflow="ellipsis") for line in step.tail(n)]

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        with self._lock:
            parts: list[Any] = []
            for step in self._running.values():
                parts.append(self._line(step, "", "bold"))
                parts.extend(self._reasons(step, 1))
                parts.extend(self._tail(step, TAIL, "    "))
            state = f" {self._state}" if self._state else ""
            count = f" ({self._finished}/{self._total})" if self._total else ""
            header = f"[+] Building {time.monotonic() - self._started:.1f}s{count}{state}"
            parts.append(Text(header, "bold red" if self._state == "FAILED" else "bold"))
            return Group(*parts)


# pull / push -------------------------------------------------------------------------------------

_PULL = {"waiting": "Waiting", "exists": "Already exists", "transferring": "Downloading",
         "complete": "Pull complete", "mounted": "Mounted"}
_PUSH = {"waiting": "Waiting", "exists": "Layer already exists", "transferring": "Pushing",
         "complete": "Pushed", "mounted": "Mounted from another repository"}
_PLAIN_FIRST = {"pull": "Pulling fs layer", "push": "Pushing"}


class PlainTransfer:
    """Docker's status lines, one per layer and change of state (``1a2b3c4d5e6f: Pull complete``)."""

    def __init__(self, action: str, out: TextIO) -> None:
        self.labels = _PULL if action == "pull" else _PUSH
        self.first = _PLAIN_FIRST[action]
        self.out = out
        self._status: dict[str, str] = {}

    def __call__(self, event: object) -> None:
        if getattr(event, "kind", None) != "layer":
            return
        status = str(getattr(event, "status", ""))
        short = str(getattr(event, "digest", "")).split(":")[-1][:12]
        before = self._status.get(short)
        if status == before or status not in self.labels:
            return
        self._status[short] = status
        if status == "transferring":  # docker prints no byte counts without a terminal
            self._write(f"{short}: {self.first}")
        else:
            self._write(f"{short}: {self.labels[status]}")

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


class BarsTransfer:
    """A rich progress bar per layer, labelled with docker's words."""

    def __init__(self, action: str, progress: Any) -> None:
        self.labels = _PULL if action == "pull" else _PUSH
        self.progress = progress
        self._tasks: dict[str, Any] = {}

    def __call__(self, event: object) -> None:
        if getattr(event, "kind", None) != "layer":
            return
        status = str(getattr(event, "status", ""))
        short = str(getattr(event, "digest", "")).split(":")[-1][:12]
        done, total = int(getattr(event, "done", 0)), int(getattr(event, "total", 0)) or None
        label = self.labels.get(status, status)
        if short not in self._tasks:
            self._tasks[short] = self.progress.add_task(short, total=total, status=label)
        self.progress.update(self._tasks[short], completed=total if status in ("exists", "mounted") else done,
                             total=total, status=label)


@contextmanager
def transfer_progress(action: str, *, quiet: bool = False,
                      out: TextIO | None = None) -> Iterator[Callable[[Any], None] | None]:
    """The callback for a pull or push (``action``): bars on a terminal, status lines otherwise."""
    stream = out or sys.stdout
    if quiet:
        yield None
    elif not is_terminal(stream):
        yield PlainTransfer(action, stream)
    else:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        columns = (TextColumn("{task.description}"), TextColumn("{task.fields[status]:<22}"), BarColumn(),
                   DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=Console(file=stream), transient=False) as bars:
            yield BarsTransfer(action, bars)
