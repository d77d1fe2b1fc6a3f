"""Speculative COPY: the context COPYs right after a RUN (or a COPY) are made while it runs.

A cold build of ``RUN apt-get install …`` then ``COPY . /app`` spends the RUN's
time in the container and then the COPY's copying files and committing them, one
after the other, while a core sits idle. A COPY's layer depends on the image
below it only at the paths it writes or resolves: its destination and the
destination's parents, what it replaces there, and (for ``--chown`` by name)
``/etc/passwd``. So when a step runs, lamina makes the layers of the next COPYs
in a row (up to ``AHEAD``) over that step's *lowers*, each on a thread of its own,
and when a COPY's turn comes keeps its layer if, and only if:

- it is the same instruction with the same sources (the context's checksum as
  the COPY step computed it) and working directory, over the same layers plus
  those of the steps since;
- none of those steps changed a path of the COPY's layer, nor the destination or
  its parents as written (a symlink made there would move the COPY): see
  :func:`lamina.snapshot.overlap.overlaps`;
- no symlink was on the destination's path (what a symlink resolves through is
  not a path of either layer).

Otherwise the COPY runs as usual. Only a plain context COPY is speculated: no
``--from`` (another stage), ``--link`` (its own cache), ``--chown`` by name,
ADD (downloads, archives) or heredoc. The layer a failed or refused speculation
committed stays in the store, unreferenced, for ``prune``: its snapshot may be
another layer's too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from lamina.build.stepkeys import canonical_instruction
from lamina.dockerfile import instructions as ins
from lamina.image.image import Layer
from lamina.model import model

AHEAD = 2  # COPYs in a row made at once, while the step before them runs


def eligible(instr: object) -> bool:
    """Whether ``instr`` is a COPY whose layer can be made before the step below it ends."""
    if not isinstance(instr, ins.Copy) or instr.from_ or instr.link or instr.heredocs:
        return False
    # a name in --chown is looked up in the image's /etc/passwd or /etc/group
    return not instr.chown or all(part.isdigit() for part in instr.chown.split(":", 1))


def destination(instr: ins.Copy, workdir: str) -> str:
    """The COPY's destination as written, made absolute as the COPY itself makes it."""
    from lamina.build.copy import destination as copy_destination  # a cached build loads no copy code

    return copy_destination(instr.dest, workdir or "/")[0]


class GaveUp(Exception):
    """The speculation cannot make a layer that could stand for the step (the step will run)."""


@model
class Made:
    """What the speculation made: the layer, its snapshot dir, and the sources' checksum it copied."""

    layer: Layer
    snapshot: Path
    sources: str | None


class Speculation:
    """One COPY (``instr``, expanded) being made over ``lowers`` on a thread of its own."""

    def __init__(self, instr: ins.Copy, workdir: str, lowers: Sequence[Path], make: Callable[[], Made]) -> None:
        self.instr = instr
        self.workdir = workdir
        self.lowers = list(lowers)
        self._made: Made | None = None
        self._thread = threading.Thread(target=self._run, args=(make,), name="lamina-speculate", daemon=True)
        self._thread.start()

    def _run(self, make: Callable[[], Made]) -> None:
        try:
            self._made = make()
        except Exception:  # noqa: BLE001 - GaveUp, or an error the COPY step meets again and reports
            self._made = None

    def wait(self) -> Made | None:
        """The layer made, or None when the speculation gave up or failed."""
        self._thread.join()
        return self._made


def adopted(spec: Speculation, lowers: Sequence[Path], instr: object, sources: str | None,
            workdir: object) -> Layer | None:
    """``spec``'s layer when it may stand for the step about to run over ``lowers``: that step is the
    same COPY (``instr``: its canonical form), with the same ``sources`` checksum and ``workdir``,
    over the layers ``spec`` was made over plus those of the steps since, and none of those steps
    changed a path of the layer or the destination's path."""
    from lamina.snapshot.overlap import overlaps  # a cached build needs no snapshot code

    made = spec.wait()
    since = len(lowers) - len(spec.lowers)
    if (made is None or since < 1 or list(lowers[since:]) != spec.lowers
            or instr != canonical_instruction(spec.instr) or sources != made.sources or workdir != spec.workdir):
        return None
    dest = destination(spec.instr, spec.workdir)
    return None if any(overlaps(upper, made.snapshot, dest) for upper in lowers[:since]) else made.layer


def worth_it() -> bool:
    """Another core to run the COPY on while the RUN's processes use one."""
    from lamina.syscalls import cpus

    return cpus() > 1
