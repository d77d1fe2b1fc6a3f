"""The image config blob: a real Docker config round-trips, and small values behave."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.errors import LaminaError
from lamina.oci.config import ContainerConfig, Healthcheck, History, ImageConfig
from lamina.oci.digest import Digest

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64

# What BuildKit writes for a small nginx-like image (keys as docker emits them).
REAL_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "author": "Jane <jane@example.com>",
    "config": {
        "User": "101:101",
        "ExposedPorts": {"443/tcp": {}, "80/tcp": {}, "53/udp": {}},
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_VERSION=1.25.3",
                "EMPTY="],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"], "Interval": 30000000000,
                        "Timeout": 5000000000, "StartPeriod": 10000000000, "StartInterval": 1000000000,
                        "Retries": 3},
        "ArgsEscaped": True,
        "Volumes": {"/var/cache/nginx": {}, "/data": {}},
        "WorkingDir": "/usr/share/nginx/html",
        "Labels": {"maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>",
                   "org.opencontainers.image.version": "1.25.3"},
        "StopSignal": "SIGQUIT",
        "OnBuild": ["COPY . /app", "RUN make"],
        "Shell": ["/bin/bash", "-o", "pipefail", "-c"],
    },
    "created": "2024-01-02T03:04:05.123456789Z",
    "history": [
        {"created": "2023-12-19T01:20:27.343657166Z",
         "created_by": "/bin/sh -c #(nop) ADD file:a1b2 in / "},
        {"created": "2023-12-19T01:20:27.768489064Z", "created_by": "/bin/sh -c #(nop)  CMD [\"bash\"]",
         "empty_layer": True},
        {"created": "2024-01-02T03:04:05.123456789Z", "created_by": "LABEL maintainer=NGINX",
         "comment": "buildkit.dockerfile.v0", "empty_layer": True},
        {"created": "2024-01-02T03:04:05.123456789Z", "author": "Jane <jane@example.com>",
         "created_by": "RUN /bin/sh -c apt-get update # buildkit", "comment": "buildkit.dockerfile.v0"},
    ],
    "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
}

# Fields a builder does not carry forward, as the legacy builder wrote them.
LEGACY_ONLY = {"container": "0123abcd", "container_config": {"Hostname": "0123abcd", "Cmd": ["/bin/sh"]},
               "docker_version": "20.10.7"}


def test_real_config_round_trips() -> None:
    cfg = ImageConfig.decode(json.dumps(REAL_CONFIG).encode())
    assert cfg.to_json() == REAL_CONFIG
    again = ImageConfig.decode(cfg.encode())
    assert again == cfg
    assert again.encode() == cfg.encode()


def test_real_config_fields() -> None:
    cfg = ImageConfig.from_json(REAL_CONFIG)
    c = cfg.config
    assert c.exposed_ports == ("443/tcp", "80/tcp", "53/udp")
    assert c.volumes == ("/var/cache/nginx", "/data")
    assert c.on_build == ("COPY . /app", "RUN make")
    assert c.healthcheck == Healthcheck(("CMD-SHELL", "curl -f http://localhost/ || exit 1"),
                                        30_000_000_000, 5_000_000_000, 10_000_000_000, 1_000_000_000, 3)
    assert c.args_escaped is True
    assert cfg.diff_ids == (Digest.parse(D1), Digest.parse(D2))
    assert [h.empty_layer for h in cfg.history] == [False, True, True, False]
    assert cfg.history[3].author == "Jane <jane@example.com>"
    assert c.env_dict()["EMPTY"] == ""


def test_legacy_fields_are_dropped() -> None:
    cfg = ImageConfig.from_json({**REAL_CONFIG, **LEGACY_ONLY})
    assert cfg.to_json() == REAL_CONFIG


def test_minimal_config_encoding() -> None:
    cfg = ImageConfig()
    assert cfg.encode() == (b'{"architecture":"amd64","config":{},"history":[],"os":"linux",'
                            b'"rootfs":{"type":"layers","diff_ids":[]}}')


def test_platform_fields() -> None:
    doc = {"architecture": "arm64", "variant": "v8", "os": "windows", "os.version": "10.0.1",
           "config": {}, "history": [], "rootfs": {"type": "layers", "diff_ids": []}}
    cfg = ImageConfig.from_json(doc)
    assert (cfg.architecture, cfg.variant, cfg.os, cfg.os_version) == ("arm64", "v8", "windows", "10.0.1")
    assert cfg.to_json() == doc


# (initial env, key, value, resulting env)
WITH_ENV = [
    ((), "A", "1", ("A=1",)),
    (("A=1", "B=2", "C=3"), "B", "x", ("A=1", "B=x", "C=3")),  # position kept
    (("A=1", "B=2"), "C", "3", ("A=1", "B=2", "C=3")),  # appended
    (("A=1", "AB=2"), "AB", "", ("A=1", "AB=")),  # whole name, not a prefix
    (("PATH=/bin",), "PATH", "/usr/bin:/bin", ("PATH=/usr/bin:/bin",)),
    (("A=x=y",), "A", "z=w", ("A=z=w",)),
]


@pytest.mark.parametrize(("env", "key", "value", "expected"), WITH_ENV)
def test_with_env(env: tuple[str, ...], key: str, value: str, expected: tuple[str, ...]) -> None:
    before = ContainerConfig(env=env)
    after = before.with_env(key, value)
    assert after.env == expected
    assert before.env == env  # values are immutable
    assert dict(after.env_dict()) == dict(item.partition("=")[::2] for item in expected)  # its cache agrees
    assert after == ContainerConfig(env=expected)  # the cache is not part of the value


@pytest.mark.parametrize(("env", "expected"), [
    ((), {}),
    (("A=1", "B=x=y", "C=", "D"), {"A": "1", "B": "x=y", "C": "", "D": ""}),
])
def test_env_dict(env: tuple[str, ...], expected: dict[str, str]) -> None:
    assert ContainerConfig(env=env).env_dict() == expected


HEALTHCHECKS = [
    (Healthcheck(("NONE",)), {"Test": ["NONE"]}),
    (Healthcheck(("CMD", "true"), interval=1, retries=2), {"Test": ["CMD", "true"], "Interval": 1, "Retries": 2}),
]


@pytest.mark.parametrize(("hc", "doc"), HEALTHCHECKS)
def test_healthcheck_json(hc: Healthcheck, doc: dict[str, Any]) -> None:
    assert hc.to_json() == doc
    assert Healthcheck.from_json(doc) == hc


HISTORIES = [
    (History(), {}),
    (History("RUN x", "2024-01-01T00:00:00Z", "c", "a", True),
     {"created": "2024-01-01T00:00:00Z", "author": "a", "created_by": "RUN x", "comment": "c", "empty_layer": True}),
]


@pytest.mark.parametrize(("history", "doc"), HISTORIES)
def test_history_json(history: History, doc: dict[str, Any]) -> None:
    assert history.to_json() == doc
    assert History.from_json(doc) == history


@pytest.mark.parametrize(("data", "message"), [
    (b"", "malformed image config"),
    (b"not json", "malformed image config"),
    (b"[]", "not a JSON object"),
    (b"null", "not a JSON object"),
    (b'{"rootfs": "layers"}', "malformed image config"),
    (b'{"history": [1]}', "malformed image config"),
    (b'{"rootfs": {"diff_ids": ["sha256:x"]}}', "invalid digest"),
])
def test_decode_malformed(data: bytes, message: str) -> None:
    with pytest.raises(LaminaError, match=message):
        ImageConfig.decode(data)


def test_from_json_empty_container_config() -> None:
    assert ContainerConfig.from_json(None) == ContainerConfig()
    assert ContainerConfig.from_json({}) == ContainerConfig()
    assert ContainerConfig().to_json() == {}
