"""How each metadata instruction changes the image config, as Docker does it.

Pure functions over :class:`~lamina.oci.config.ContainerConfig`; the
instructions given here are already expanded.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import replace

from lamina.dockerfile import instructions as ins
from lamina.errors import DockerfileError
from lamina.oci.config import ContainerConfig, Healthcheck

DEFAULT_SHELL = ("/bin/sh", "-c")


def shell_of(config: ContainerConfig) -> tuple[str, ...]:
    return config.shell or DEFAULT_SHELL


def command_form(config: ContainerConfig, command: tuple[str, ...], json: bool) -> tuple[str, ...]:
    """Exec form as given; shell form wrapped in the image's SHELL."""
    return command if json else shell_of(config) + (" ".join(command),)


def resolve_workdir(current: str, path: str) -> str:
    """WORKDIR is relative to the previous one; an absolute one is kept as written.

    BuildKit stores an absolute path verbatim (``/x/y/`` stays ``/x/y/`` in the config) and
    cleans only a relative one joined onto the current directory.
    """
    if path.startswith("/"):
        return path
    # normpath keeps a leading "//" (POSIX allows it a meaning); Go's path.Clean does not
    return "/" + posixpath.normpath(posixpath.join(current or "/", path)).lstrip("/")


# The names Docker's signal.ParseSignal knows on Linux (upper case, without "SIG").
_SIGNALS = frozenset(
    ["ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE",
     "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU",
     "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX"]
    + [f"RTMIN+{n}" for n in range(1, 16)] + [f"RTMAX-{n}" for n in range(1, 15)]
)


def check_signal(signal: str, line: int, file: str) -> str:
    """STOPSIGNAL takes a non-zero number or a known name (any case, ``SIG`` optional), kept as written."""
    if re.fullmatch(r"[+-]?[0-9]+", signal):  # Go's strconv.Atoi
        valid = int(signal) != 0
    else:
        name = signal.upper()
        valid = (name[3:] if name.startswith("SIG") else name) in _SIGNALS
    if not valid:
        raise DockerfileError(f"Invalid signal: {signal}", file=file, line=line)
    return signal


def expose_ports(ports: tuple[str, ...], line: int, file: str) -> list[str]:
    """``80``, ``53/udp``, ``7000-7002`` → ``80/tcp``, ``53/udp``, ``7000/tcp``…; protocols lower-cased.

    Each word is read as Docker's ``nat.ParsePortSpec`` reads it, so an
    ``[ip:][hostPort:]containerPort`` mapping is accepted and exposes its
    container port; the errors are Docker's, checked in Docker's order.
    """
    out: list[str] = []
    for spec in ports:
        try:
            out.extend(_port_spec(spec))
        except ValueError as exc:
            raise DockerfileError(str(exc), file=file, line=line) from None
    return out


def _port_spec(spec: str) -> list[str]:
    parts = spec.split(":")
    ip = ":".join(parts[:-2]) if len(parts) > 2 else ""
    host = parts[-2] if len(parts) > 1 else ""
    words = parts[-1].split("/")  # Go's SplitProtoPort: a third word is ignored
    port, proto = (words[0], words[1] or "tcp") if len(words) > 1 else (words[0], "tcp")
    if not port:
        proto = ""
    if ip:
        _check_ip(ip)
    if not port:
        raise ValueError(f"No port specified: {spec}<empty>")
    first, last = _port_range(port, "containerPort")
    if host:
        host_first, host_last = _port_range(host, "hostPort")
        if last - first != host_last - host_first and last != first:
            raise ValueError(f"Invalid ranges specified for container and host Ports: {port} and {host}")
    if proto.lower() not in ("tcp", "udp", "sctp"):
        raise ValueError(f"Invalid proto: {proto}")
    return [f"{p}/{proto.lower()}" for p in range(first, last + 1)]


def _port_range(text: str, what: str) -> tuple[int, int]:
    """Go's ``nat.ParsePortRange``: ``N`` or ``N-M`` (words after a second ``-`` are ignored)."""
    words = text.split("-")
    if any(not (w.isascii() and w.isdigit()) or int(w) > 65535 for w in words[:2]) or \
            (len(words) > 1 and int(words[1]) < int(words[0])):
        raise ValueError(f"Invalid {what}: {text}")
    return int(words[0]), int(words[1 if len(words) > 1 else 0])


def _check_ip(text: str) -> None:
    import ipaddress

    bracketed = text.startswith("[") and text.endswith("]")
    if ":" in text and not bracketed:
        raise ValueError(f"Invalid ip address {text}: address {text}:: too many colons in address")
    try:
        ipaddress.ip_address(text[1:-1] if bracketed else text)
    except ValueError:
        raise ValueError(f"Invalid ip address: {text}") from None


def apply(config: ContainerConfig, instr: ins.Instruction, *, file: str = "Dockerfile",
          cmd_set: bool = False) -> ContainerConfig:
    """The config after a metadata instruction (file steps change only WorkingDir here)."""
    match instr:
        case ins.Env(pairs=pairs):
            for key, value in pairs:
                config = config.with_env(key, value)
            return config
        case ins.Label(pairs=pairs):
            return replace(config, labels={**config.labels, **dict(pairs)})
        case ins.Cmd(command=command, json=json):
            return replace(config, cmd=command_form(config, command, json))
        case ins.Entrypoint(command=command, json=json):
            # Setting ENTRYPOINT drops a CMD inherited from the base, not one set in this stage.
            cmd = config.cmd if cmd_set else ()
            return replace(config, entrypoint=command_form(config, command, json), cmd=cmd)
        case ins.Expose(ports=ports):
            new = expose_ports(ports, instr.line, file)
            return replace(config, exposed_ports=tuple(dict.fromkeys(config.exposed_ports + tuple(new))))
        case ins.Volume(paths=paths):
            vols = tuple(paths)
            if not vols or not all(vols):
                raise DockerfileError("VOLUME specified can not be an empty string", file=file, line=instr.line)
            return replace(config, volumes=tuple(dict.fromkeys(config.volumes + vols)))
        case ins.User(user=user):
            return replace(config, user=user)
        case ins.Workdir(path=path):
            return replace(config, working_dir=resolve_workdir(config.working_dir, path))
        case ins.StopSignal(signal=signal):
            return replace(config, stop_signal=check_signal(signal, instr.line, file))
        case ins.Shell(command=command):
            return replace(config, shell=command)
        case ins.Onbuild():
            return replace(config, on_build=config.on_build + (instr.expression,))
        case ins.Healthcheck():
            return replace(config, healthcheck=healthcheck(instr, config.healthcheck))
        case _:
            return config


def healthcheck(instr: ins.Healthcheck, previous: Healthcheck | None) -> Healthcheck:
    if instr.test is None:
        return Healthcheck(("NONE",))
    return Healthcheck(
        test=instr.test,
        interval=instr.interval or 0,
        timeout=instr.timeout or 0,
        start_period=instr.start_period or 0,
        start_interval=instr.start_interval or 0,
        retries=instr.retries or 0,
    )
