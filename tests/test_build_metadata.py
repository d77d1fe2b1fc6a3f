"""Metadata instructions applied to a config, as Docker applies them (Dockerfile text in, config out)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from lamina.build.metadata import (
    DEFAULT_SHELL,
    apply,
    check_signal,
    command_form,
    expose_ports,
    resolve_workdir,
    shell_of,
)
from lamina.dockerfile import Cmd, Lexer, Volume, expand, parse_dockerfile
from lamina.errors import DockerfileError
from lamina.oci.config import ContainerConfig, Healthcheck

BASE = ContainerConfig(
    env=("PATH=/usr/bin:/bin", "A=1", "B=2"),
    cmd=("sh",),
    labels={"a": "1", "b": "2"},
    volumes=("/data",),
    exposed_ports=("80/tcp",),
    working_dir="/srv",
    healthcheck=Healthcheck(("CMD", "old"), interval=5, retries=9),
)


def build(lines: str, base: ContainerConfig = BASE, args: Mapping[str, str] | None = None) -> ContainerConfig:
    """Apply a stage's instructions the way the stage runner does (expanded, tracking CMD)."""
    dockerfile = parse_dockerfile("FROM base\n" + lines)
    lexer = Lexer(dockerfile.directives.escape)
    config, cmd_set = base, False
    for instr in dockerfile.stages[0].instructions:
        expanded = expand(instr, {**(args or {}), **config.env_dict()}, lexer)
        config = apply(config, expanded, cmd_set=cmd_set)
        cmd_set = cmd_set or isinstance(expanded, Cmd)
    return config


# Dockerfile lines, the config fields they should produce
CASES: list[tuple[str, dict[str, Any]]] = [
    # ENV: replacing keeps the position, new ones go last
    ("ENV A=x C=3", {"env": ("PATH=/usr/bin:/bin", "A=x", "B=2", "C=3")}),
    ("ENV B=\"two words\"\nENV A=$B", {"env": ("PATH=/usr/bin:/bin", "A=two words", "B=two words")}),
    ("ENV PATH=/opt/bin:$PATH", {"env": ("PATH=/opt/bin:/usr/bin:/bin", "A=1", "B=2")}),
    # LABEL merges, later wins
    ('LABEL b=3 c="d e"', {"labels": {"a": "1", "b": "3", "c": "d e"}}),
    ("LABEL x=1\nLABEL x=2", {"labels": {"a": "1", "b": "2", "x": "2"}}),
    # CMD: exec form as given, shell form through SHELL
    ('CMD ["echo", "hi"]', {"cmd": ("echo", "hi")}),
    ("CMD echo hi", {"cmd": ("/bin/sh", "-c", "echo hi")}),
    ('SHELL ["/bin/bash", "-o", "pipefail", "-c"]\nCMD echo $HOME',
     {"cmd": ("/bin/bash", "-o", "pipefail", "-c", "echo $HOME"), "shell": ("/bin/bash", "-o", "pipefail", "-c")}),
    # ENTRYPOINT resets an inherited CMD, not one set in this stage
    ('ENTRYPOINT ["/init"]', {"entrypoint": ("/init",), "cmd": ()}),
    ("ENTRYPOINT exec app", {"entrypoint": ("/bin/sh", "-c", "exec app"), "cmd": ()}),
    ('CMD ["--help"]\nENTRYPOINT ["/init"]', {"entrypoint": ("/init",), "cmd": ("--help",)}),
    ('ENTRYPOINT ["/init"]\nCMD ["--help"]', {"entrypoint": ("/init",), "cmd": ("--help",)}),
    # EXPOSE: ranges expanded, protocols lower-cased, duplicates dropped, order kept
    ("EXPOSE 7000-7002", {"exposed_ports": ("80/tcp", "7000/tcp", "7001/tcp", "7002/tcp")}),
    ("EXPOSE 9000/TCP 53/udp 80 132/SCTP", {"exposed_ports": ("80/tcp", "9000/tcp", "53/udp", "132/sctp")}),
    ("EXPOSE $PORTS", {"exposed_ports": ("80/tcp", "8080/tcp", "8443/udp")}),
    # VOLUME: appended, de-duplicated
    ("VOLUME /data /logs /logs", {"volumes": ("/data", "/logs")}),
    ('VOLUME ["/a", "/b"]', {"volumes": ("/data", "/a", "/b")}),
    # WORKDIR: relative to the previous one, cleaned
    ("WORKDIR app", {"working_dir": "/srv/app"}),
    ("WORKDIR /opt\nWORKDIR ../usr/./lib/", {"working_dir": "/usr/lib"}),
    ("WORKDIR $A/x", {"working_dir": "/srv/1/x"}),
    # HEALTHCHECK replaces the inherited one entirely; NONE disables
    ("HEALTHCHECK NONE", {"healthcheck": Healthcheck(("NONE",))}),
    ("HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=2s --retries=4 CMD curl -f x",
     {"healthcheck": Healthcheck(("CMD-SHELL", "curl -f x"), 30_000_000_000, 3_000_000_000, 60_000_000_000,
                                 2_000_000_000, 4)}),
    ('HEALTHCHECK CMD ["true"]', {"healthcheck": Healthcheck(("CMD", "true"))}),
    # the rest
    ("USER 1000:1000", {"user": "1000:1000"}),
    ("USER $B", {"user": "2"}),
    ("STOPSIGNAL SIGQUIT", {"stop_signal": "SIGQUIT"}),
    ("ONBUILD RUN make\nONBUILD COPY . /app", {"on_build": ("RUN make", "COPY . /app")}),
    ("ARG X=1\nMAINTAINER me", {}),
]


@pytest.mark.parametrize(("lines", "changes"), CASES)
def test_apply(lines: str, changes: dict[str, Any]) -> None:
    config = build(lines, args={"PORTS": "8080 8443/UDP"})
    untouched = {k: getattr(BASE, k) for k in ContainerConfig.__dataclass_fields__ if k not in changes}
    assert {k: getattr(config, k) for k in changes} == changes
    assert {k: getattr(config, k) for k in untouched} == untouched


def test_entrypoint_on_a_base_without_cmd() -> None:
    assert build('ENTRYPOINT ["/init"]', base=ContainerConfig()).cmd == ()


@pytest.mark.parametrize(("ports", "expected"), [
    (("80",), ["80/tcp"]),
    (("80/",), ["80/tcp"]),
    (("53/UDP",), ["53/udp"]),
    (("65535/sctp",), ["65535/sctp"]),
    (("1-3/udp", "2"), ["1/udp", "2/udp", "3/udp", "2/tcp"]),
    (("08", "0", "81/udp/x"), ["8/tcp", "0/tcp", "81/udp"]),
    (("80-82-100",), ["80/tcp", "81/tcp", "82/tcp"]),  # Go reads only the first two words of a range
    # a mapping exposes its container port, as Docker's nat.ParsePortSpec reads it
    (("8080:80", ":90", "127.0.0.1::70/udp"), ["80/tcp", "90/tcp", "70/udp"]),
    (("[::1]:80:81", "1.2.3.4:80-81:90-91"), ["81/tcp", "90/tcp", "91/tcp"]),
])
def test_expose_ports(ports: tuple[str, ...], expected: list[str]) -> None:
    assert expose_ports(ports, 1, "Dockerfile") == expected


@pytest.mark.parametrize("port", [
    "abc",
    "",
    "/tcp",
    "70000",
    "-1",
    "7002-7000",
    "80/xyz",
    "1e3",
    ("80-"),
])
def test_expose_invalid(port: str) -> None:
    with pytest.raises(DockerfileError, match="(?i)invalid|no port specified") as info:
        expose_ports((port,), 7, "app.Dockerfile")
    assert (info.value.file, info.value.line) == ("app.Dockerfile", 7)


@pytest.mark.parametrize("signal", ["9", "-5", "99", "SIGKILL", "sigkill", "usr1", "IOT", "RTMIN+3", "SIGRTMAX-2"])
def test_stopsignal_accepted_as_written(signal: str) -> None:
    assert check_signal(signal, 1, "Dockerfile") == signal


@pytest.mark.parametrize("signal", ["0", "SIGNOTREAL", "SIGUNUSED", " 9", "9x", "RTMIN+16", ""])
def test_stopsignal_invalid(signal: str) -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:4: Invalid signal: "):
        check_signal(signal, 4, "Dockerfile")


@pytest.mark.parametrize(("port", "message"), [  # recorded from Docker 20.10
    ("80/xyz", "Invalid proto: xyz"),
    ("80/XYZ", "Invalid proto: XYZ"),
    ("x/xyz", "Invalid containerPort: x"),
    ("+80", r"Invalid containerPort: \+80"),
    ("9000-8000", "Invalid containerPort: 9000-8000"),
    ("70000/udp", "Invalid containerPort: 70000"),
    ("80:", "No port specified: 80:<empty>"),
    ("/tcp", "No port specified: /tcp<empty>"),
    ("a:80", "Invalid hostPort: a"),
    ("1.2.3.4:80-81:90-92", "Invalid ranges specified for container and host Ports: 90-92 and 80-81"),
    ("999.1.1.1:80:80", "Invalid ip address: 999.1.1.1"),
])
def test_expose_messages_are_dockers(port: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=f"^Dockerfile:2: {message}$"):
        expose_ports((port,), 2, "Dockerfile")


def test_expose_error_is_located() -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:3: Invalid containerPort: abc$"):
        build("ENV X=1\nEXPOSE 80 abc")


def test_volume_of_empty_strings() -> None:
    with pytest.raises(DockerfileError, match="VOLUME specified can not be an empty string"):
        apply(BASE, Volume(paths=("",), line=4))


def test_volume_with_one_empty_path() -> None:
    with pytest.raises(DockerfileError, match="empty string"):
        build('VOLUME ["/a", "$EMPTY"]', args={"EMPTY": ""})


@pytest.mark.parametrize(("current", "path", "expected"), [
    ("", "app", "/app"),
    ("", "/", "/"),
    ("/", "a/b/", "/a/b"),
    ("/srv", "app", "/srv/app"),
    ("/srv", "/opt", "/opt"),
    ("/srv/app", "..", "/srv"),
    ("/", "../..", "/"),
    ("/a", "b/./c//d", "/a/b/c/d"),
    ("/", "//srv", "//srv"),
    ("/srv", "/x/y/", "/x/y/"),
    ("/x/y/", "z", "/x/y/z"),
])
def test_resolve_workdir(current: str, path: str, expected: str) -> None:
    assert resolve_workdir(current, path) == expected


@pytest.mark.parametrize(("config", "command", "json", "expected"), [
    (ContainerConfig(), ("a b",), False, ("/bin/sh", "-c", "a b")),
    (ContainerConfig(), ("a", "b"), True, ("a", "b")),
    (ContainerConfig(shell=("pwsh", "-c")), ("a", "b"), False, ("pwsh", "-c", "a b")),
])
def test_command_form(config: ContainerConfig, command: tuple[str, ...], json: bool,
                      expected: tuple[str, ...]) -> None:
    assert command_form(config, command, json) == expected


def test_shell_of() -> None:
    assert shell_of(ContainerConfig()) == DEFAULT_SHELL == ("/bin/sh", "-c")
    assert shell_of(ContainerConfig(shell=("bash", "-c"))) == ("bash", "-c")
