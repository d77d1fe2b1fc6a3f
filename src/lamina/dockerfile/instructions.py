"""Typed instructions: one frozen value per Dockerfile instruction.

:func:`to_instruction` turns a parser :class:`Node` into one of these, with
BuildKit's validation and error wording. Words stay *unexpanded*: what
``$VAR`` means depends on the ARG/ENV state at that point of the build, which
the planner tracks (see :mod:`lamina.dockerfile.expand`). Like BuildKit, ENV
and LABEL values and ARG defaults keep their quotes here; expansion removes
them. Every instruction carries ``line`` (its first line) and ``original``
(its text, for history ``created_by`` and error messages).
"""

from __future__ import annotations

from lamina.model import model

from .parser import Heredoc, Node


@model(kw_only=True)
class From:
    """``FROM [--platform=P] image [AS name]``; ``stage_name`` is lower-cased."""

    image: str
    stage_name: str | None = None
    platform: str | None = None
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Run:
    """``RUN``; shell form is one word (the command line), JSON form the argv."""

    command: tuple[str, ...]
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[str, ...] = ()
    network: str | None = None
    security: str | None = None
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Cmd:
    """``CMD``; shell form is one word, to be run by the stage's SHELL."""

    command: tuple[str, ...]
    json: bool = False
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Entrypoint:
    """``ENTRYPOINT``; ``ENTRYPOINT []`` (JSON, empty) clears it."""

    command: tuple[str, ...]
    json: bool = False
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Env:
    """``ENV k=v ...`` or legacy ``ENV k v``; all pairs see the env from before the line."""

    pairs: tuple[tuple[str, str], ...]
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Arg:
    """``ARG name[=default] ...``; a None default means "declared, no default"."""

    pairs: tuple[tuple[str, str | None], ...]
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Label:
    """``LABEL k=v ...``."""

    pairs: tuple[tuple[str, str], ...]
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Maintainer:
    """``MAINTAINER name`` (deprecated; sets the image's author)."""

    name: str
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Expose:
    """``EXPOSE port[/proto] ...``; after expansion one word may give several ports."""

    ports: tuple[str, ...]
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Copy:
    """``COPY``; ``sources`` are paths, ``heredocs`` the inline files (named by ``name``)."""

    sources: tuple[str, ...]
    dest: str
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Add:
    """``ADD``: COPY's fields plus ``checksum``, ``keep_git_dir`` and ``unpack``.

    ``from_`` and ``parents`` are always unset: ADD accepts neither flag; they
    exist so code handling COPY and ADD alike can read the same fields.
    """

    sources: tuple[str, ...]
    dest: str
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None
    """``--unpack``: None (the default) extracts local tar archives and never remote ones."""
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Volume:
    """``VOLUME path ...`` or ``VOLUME ["path", ...]``."""

    paths: tuple[str, ...]
    line: int = 0
    original: str = ""


@model(kw_only=True)
class User:
    """``USER user[:group]``."""

    user: str
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Workdir:
    """``WORKDIR path``."""

    path: str
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Onbuild:
    """``ONBUILD trigger``; ``expression`` is what goes into the image's OnBuild list."""

    trigger: Node
    expression: str
    line: int = 0
    original: str = ""


@model(kw_only=True)
class StopSignal:
    """``STOPSIGNAL signal``."""

    signal: str
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Healthcheck:
    """``HEALTHCHECK NONE`` (``test`` is None) or ``HEALTHCHECK [flags] CMD ...``.

    ``test`` is in image-config form: ``("CMD", argv...)`` for JSON form,
    ``("CMD-SHELL", line)`` for shell form. Durations are nanoseconds; None
    (and 0) mean "inherit the default".
    """

    test: tuple[str, ...] | None
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None
    line: int = 0
    original: str = ""


@model(kw_only=True)
class Shell:
    """``SHELL ["executable", "parameters"...]`` (JSON form only)."""

    command: tuple[str, ...]
    line: int = 0
    original: str = ""


Instruction = (
    From
    | Run
    | Cmd
    | Entrypoint
    | Env
    | Arg
    | Label
    | Maintainer
    | Expose
    | Copy
    | Add
    | Volume
    | User
    | Workdir
    | Onbuild
    | StopSignal
    | Healthcheck
    | Shell
)

# Imported last: the converter needs the classes above.
from .convert import to_instruction  # noqa: E402

__all__ = [
    "Add",
    "Arg",
    "Cmd",
    "Copy",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "Instruction",
    "Label",
    "Maintainer",
    "Onbuild",
    "Run",
    "Shell",
    "StopSignal",
    "User",
    "Volume",
    "Workdir",
    "to_instruction",
]
