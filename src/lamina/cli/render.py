"""Build events → terminal lines, in the classic builder's format.

``Step 3/9 : COPY src/ /app/``, `` ---> Using cache``, `` ---> 1a2b3c4d5e6f``,
the RUN output as it streams, then ``Successfully built``/``tagged``.
"""

from __future__ import annotations

import sys
from typing import TextIO

from lamina.build import events


class ClassicRenderer:
    def __init__(self, out: TextIO | None = None, *, quiet: bool = False, explain: bool = False) -> None:
        self.out = out or sys.stdout
        self.quiet = quiet
        self.explain = explain  # --explain: a full line per cache miss (to stderr with -q)
        self._line_open = False

    def __call__(self, event: events.Event) -> None:
        if self.quiet and not isinstance(event, events.Warning_) and not (
                self.explain and isinstance(event, events.CacheMiss)):
            return
        match event:
            case events.StepStarted():
                self._end_output()
                self._print(f"Step {event.number}/{event.total} : {event.text}")
            case events.StepCached():
                self._print(" ---> Using cache")
            case events.StepOutput():
                text = event.data.decode("utf-8", "replace")
                self.out.write(text)
                self._line_open = not text.endswith("\n")
                self.out.flush()
            case events.StepDone():
                self._end_output()
                if event.image_id:  # none for a metadata step deep in a huge Dockerfile (see stagerun)
                    self._print(f" ---> {event.image_id}")
            case events.CacheMiss():
                from lamina.build.explain import miss_line, summary

                self._end_output()
                if not self.explain:
                    self._print(f" ---> Cache miss: {summary(event.reasons)}")
                elif self.quiet:
                    print(miss_line(event.number, event.total, event.text, event.reasons), file=sys.stderr)
                else:
                    self._print(miss_line(event.number, event.total, event.text, event.reasons))
            case events.Warning_():
                self._end_output()
                print(f"[Warning] {event.message}", file=sys.stderr)
            case events.BuildDone():
                self._print(f"Successfully built {event.image_id}")
                for tag in event.tags:
                    self._print(f"Successfully tagged {tag}")

    def _end_output(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()
