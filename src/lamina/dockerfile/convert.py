"""Node to typed instruction, with BuildKit's checks and error wording.

Private: use :func:`lamina.dockerfile.instructions.to_instruction`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from lamina.errors import DockerfileError

from .duration import parse_duration
from .flags import FlagKind, Flags, parse_flags
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
)
from .parser import Heredoc, Node

__all__ = ["to_instruction"]

_B, _S, _SS = FlagKind.BOOL, FlagKind.STRING, FlagKind.STRINGS
_COPY_FLAGS = {"from": _S, "chown": _S, "chmod": _S, "link": _B, "parents": _B, "exclude": _SS}
_ADD_FLAGS = {"chown": _S, "chmod": _S, "link": _B, "exclude": _SS, "checksum": _S, "keep-git-dir": _B,
              "unpack": _B}
_HEALTH_FLAGS = {n: _S for n in ("interval", "timeout", "start-period", "start-interval", "retries")}
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
_MIN_INTERVAL = 1_000_000  # 1ms, Docker's container.MinimumDuration
_HEREDOC_ARG = re.compile(r"\d*<<-?[^<]+")


def to_instruction(node: Node, file: str = "Dockerfile") -> Instruction:
    """Convert ``node``; raise :class:`DockerfileError` located at its first line."""
    convert = _CONVERTERS.get(node.keyword)
    if convert is None:
        raise DockerfileError(f"unknown instruction: {node.keyword}", file=file, line=node.start_line)
    try:
        return convert(node)
    except DockerfileError as exc:
        raise exc.located(file, node.start_line) from exc.__cause__


def _flags(node: Node, accepted: dict[str, FlagKind] | None = None) -> Flags:
    return parse_flags(node.flags, accepted or {})


def _exactly_one(node: Node) -> str:
    if len(node.args) != 1:
        raise DockerfileError(f"{node.keyword} requires exactly one argument")
    _flags(node)
    return node.args[0]


def _pairs(node: Node) -> tuple[tuple[str, str], ...]:
    # The package already split `k=v k2=v2` and legacy `k v...` into pairs.
    _flags(node)
    if not node.args:
        raise DockerfileError(f"{node.keyword} requires at least one argument")
    if len(node.args) % 2:
        raise DockerfileError(f"Bad input to {node.keyword}, too many arguments")
    pairs = tuple(zip(node.args[::2], node.args[1::2], strict=True))
    if any(not key for key, _ in pairs):
        raise DockerfileError(f"{node.keyword} names can not be blank")
    return pairs


def _from(node: Node) -> From:
    args = node.args
    name = None
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise DockerfileError(
                f'invalid name for build stage: "{args[2]}", name can\'t start with a number or contain symbols'
            )
    elif len(args) != 1:
        raise DockerfileError("FROM requires either one or three arguments")
    flags = _flags(node, {"platform": _S})
    return From(
        image=args[0],
        stage_name=name,
        platform=flags.string("platform"),
        line=node.start_line,
        original=node.original,
    )


def _run(node: Node) -> Run:
    flags = _flags(node, {"mount": _SS, "network": _S, "security": _S})
    network, security = flags.string("network"), flags.string("security")
    if network is not None and network not in ("default", "none", "host"):
        raise DockerfileError(f'invalid network mode "{network}"')
    if security is not None and security not in ("sandbox", "insecure"):
        raise DockerfileError(f'security "{security}" is not valid')
    return Run(
        command=node.args,
        json=node.json,
        heredocs=node.heredocs,
        mounts=flags.strings("mount"),
        network=network,
        security=security,
        line=node.start_line,
        original=node.original,
    )


def _cmd(node: Node) -> Cmd:
    _flags(node)
    return Cmd(command=node.args, json=node.json, line=node.start_line, original=node.original)


def _entrypoint(node: Node) -> Entrypoint:
    _flags(node)
    return Entrypoint(command=node.args, json=node.json, line=node.start_line, original=node.original)


def _env(node: Node) -> Env:
    return Env(pairs=_pairs(node), line=node.start_line, original=node.original)


def _label(node: Node) -> Label:
    return Label(pairs=_pairs(node), line=node.start_line, original=node.original)


def _arg(node: Node) -> Arg:
    if not node.args:
        raise DockerfileError("ARG requires at least one argument")
    pairs: list[tuple[str, str | None]] = []
    for word in node.args:
        key, has_default, default = word.partition("=")
        if not key:
            raise DockerfileError("ARG names can not be blank")
        pairs.append((key, default if has_default else None))
    _flags(node)
    return Arg(pairs=tuple(pairs), line=node.start_line, original=node.original)


def _maintainer(node: Node) -> Maintainer:
    return Maintainer(name=_exactly_one(node), line=node.start_line, original=node.original)


def _expose(node: Node) -> Expose:
    if not node.args:
        raise DockerfileError("EXPOSE requires at least one argument")
    _flags(node)
    return Expose(ports=node.args, line=node.start_line, original=node.original)


def _sources(node: Node) -> tuple[tuple[str, ...], str, tuple[Heredoc, ...]]:
    """Split COPY/ADD words into paths, destination and inline files."""
    if len(node.args) < 2:
        raise DockerfileError(
            f"{node.keyword} requires at least two arguments, but only one was provided. "
            "Destination could not be determined"
        )
    *sources, dest = node.args
    if node.heredocs and not node.json:
        if _HEREDOC_ARG.fullmatch(dest):
            raise DockerfileError(f"{node.keyword} cannot accept a heredoc as a destination")
        sources = [s for s in sources if not _HEREDOC_ARG.fullmatch(s)]
    return tuple(sources), dest, node.heredocs if not node.json else ()


def _copy(node: Node) -> Copy:
    flags = _flags(node, _COPY_FLAGS)
    sources, dest, heredocs = _sources(node)
    return Copy(
        sources=sources,
        dest=dest,
        from_=flags.string("from"),
        chown=flags.string("chown"),
        chmod=flags.string("chmod"),
        link=flags.boolean("link"),
        parents=flags.boolean("parents"),
        excludes=flags.strings("exclude"),
        heredocs=heredocs,
        line=node.start_line,
        original=node.original,
    )


def _add(node: Node) -> Add:
    flags = _flags(node, _ADD_FLAGS)
    sources, dest, heredocs = _sources(node)
    return Add(
        sources=sources,
        dest=dest,
        chown=flags.string("chown"),
        chmod=flags.string("chmod"),
        link=flags.boolean("link"),
        excludes=flags.strings("exclude"),
        heredocs=heredocs,
        checksum=flags.string("checksum"),
        keep_git_dir=flags.boolean("keep-git-dir"),
        unpack=None if flags.string("unpack") is None else flags.boolean("unpack"),
        line=node.start_line,
        original=node.original,
    )


def _volume(node: Node) -> Volume:
    if not node.args:
        raise DockerfileError("VOLUME requires at least one argument")
    _flags(node)
    paths = tuple(p.strip() for p in node.args)
    if "" in paths:
        raise DockerfileError("VOLUME specified can not be an empty string")
    return Volume(paths=paths, line=node.start_line, original=node.original)


def _user(node: Node) -> User:
    return User(user=_exactly_one(node), line=node.start_line, original=node.original)


def _workdir(node: Node) -> Workdir:
    return Workdir(path=_exactly_one(node), line=node.start_line, original=node.original)


def _stopsignal(node: Node) -> StopSignal:
    return StopSignal(signal=_exactly_one(node), line=node.start_line, original=node.original)


def _onbuild(node: Node) -> Onbuild:
    trigger = node.sub
    if trigger is None:
        raise DockerfileError("ONBUILD requires at least one argument")
    _flags(node)
    if trigger.keyword == "ONBUILD":
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger.keyword in ("FROM", "MAINTAINER"):
        raise DockerfileError(f"{trigger.keyword} isn't allowed as an ONBUILD trigger")
    # The trigger's text, heredoc bodies included, is what the child re-parses.
    expression = trigger.original.removesuffix("\n")
    return Onbuild(trigger=trigger, expression=expression, line=node.start_line, original=node.original)


def _healthcheck(node: Node) -> Healthcheck:
    if not node.args:
        raise DockerfileError("HEALTHCHECK requires at least one argument")
    kind, args = node.args[0].upper(), node.args[1:]
    if kind == "NONE":
        # BuildKit ignores flags here rather than rejecting them; so do we.
        if args:
            raise DockerfileError("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(test=None, line=node.start_line, original=node.original)
    flags = _flags(node, _HEALTH_FLAGS)
    if kind != "CMD":
        raise DockerfileError(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    if not args:
        raise DockerfileError("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *args) if node.json else ("CMD-SHELL", *args)
    return Healthcheck(
        test=test,
        interval=_interval(flags, "interval"),
        timeout=_interval(flags, "timeout"),
        start_period=_interval(flags, "start-period"),
        start_interval=_interval(flags, "start-interval"),
        retries=_retries(flags.string("retries")),
        line=node.start_line,
        original=node.original,
    )


def _interval(flags: Flags, name: str) -> int | None:
    text = flags.string(name)
    if not text:
        return None
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise DockerfileError(str(exc)) from None
    if value != 0 and value < _MIN_INTERVAL:
        raise DockerfileError(f'Interval "{name}" cannot be less than 1ms')
    return value


def _retries(text: str | None) -> int | None:
    if not text:
        return None
    if not re.fullmatch(r"[+-]?\d+", text):
        raise DockerfileError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(2**31) <= value < 2**31:
        raise DockerfileError(f'strconv.ParseInt: parsing "{text}": value out of range')
    if value < 0:
        raise DockerfileError(f"--retries cannot be negative ({value})")
    return value


def _shell(node: Node) -> Shell:
    _flags(node)
    if not node.args:
        raise DockerfileError("SHELL requires at least one argument")
    if not node.json:
        raise DockerfileError("SHELL requires the arguments to be in JSON form")
    return Shell(command=node.args, line=node.start_line, original=node.original)


_CONVERTERS: dict[str, Callable[[Node], Instruction]] = {
    "ADD": _add,
    "ARG": _arg,
    "CMD": _cmd,
    "COPY": _copy,
    "ENTRYPOINT": _entrypoint,
    "ENV": _env,
    "EXPOSE": _expose,
    "FROM": _from,
    "HEALTHCHECK": _healthcheck,
    "LABEL": _label,
    "MAINTAINER": _maintainer,
    "ONBUILD": _onbuild,
    "RUN": _run,
    "SHELL": _shell,
    "STOPSIGNAL": _stopsignal,
    "USER": _user,
    "VOLUME": _volume,
    "WORKDIR": _workdir,
}
