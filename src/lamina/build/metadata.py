"""How each metadata instruction changes the image config, as Docker does it.

Pure functions over :class:`~lamina.oci.config.ContainerConfig`; the
instructions given here are already expanded.
"""

from __future__ import annotations

import posixpath
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
    """WORKDIR is relative to the previous one; the result is clean and absolute."""
    # normpath keeps a leading "//" (POSIX allows it a meaning); Go's path.Clean does not
    return "/" + posixpath.normpath(posixpath.join(current or "/", path)).lstrip("/")


def expose_ports(ports: tuple[str, ...], line: int, file: str) -> list[str]:
    """``80``, ``53/udp``, ``7000-7002`` → ``80/tcp``, ``53/udp``, ``7000/tcp``…; protocols lower-cased."""
    out: list[str] = []
    for spec in ports:
        port, _, proto = spec.partition("/")
        proto = (proto or "tcp").lower()
        lo, dash, hi = port.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise DockerfileError(f"invalid containerPort: {port}", file=file, line=line) from None
        if not 0 <= first <= last <= 65535 or proto not in ("tcp", "udp", "sctp"):
            raise DockerfileError(f"invalid port specification: {spec}", file=file, line=line)
        out.extend(f"{p}/{proto}" for p in range(first, last + 1))
    return out


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
            return replace(config, stop_signal=signal)
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
