"""The Dockerfile front end: pure functions from text to typed, expandable stages.

Text goes through BuildKit's own parser (the ``dockerfile`` package) into
:class:`Node` values with their line ranges (:func:`parse`), then into typed
instructions (:func:`to_instruction`) grouped into stages
(:func:`parse_dockerfile`). Words stay unexpanded until the planner, which
knows the ARG and ENV values at each point, calls :func:`expand` with a
:class:`Lexer` built from the file's escape directive. Nothing here touches
the filesystem, the network or images; every error is a located
:class:`~lamina.errors.DockerfileError`.
"""

from .duration import parse_duration
from .expand import expand, expand_tracking
from .instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    to_instruction,
)
from .parser import Directives, Heredoc, Node, ParsedFile, parse
from .shell import Expansion, Lexer
from .stages import Dockerfile, Stage, find_stage, parse_dockerfile, stage_index

__all__ = [
    "Add",
    "Arg",
    "Cmd",
    "Copy",
    "Directives",
    "Dockerfile",
    "Entrypoint",
    "Env",
    "Expansion",
    "Expose",
    "From",
    "Healthcheck",
    "Heredoc",
    "Instruction",
    "Label",
    "Lexer",
    "Maintainer",
    "Node",
    "Onbuild",
    "ParsedFile",
    "Run",
    "Shell",
    "Stage",
    "StopSignal",
    "User",
    "Volume",
    "Workdir",
    "expand",
    "expand_tracking",
    "find_stage",
    "parse",
    "parse_dockerfile",
    "parse_duration",
    "stage_index",
    "to_instruction",
]
