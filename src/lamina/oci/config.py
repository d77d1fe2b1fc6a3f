"""The image configuration blob: runtime defaults, rootfs diff_ids, history.

Modelled on Docker's ``image.Image``/OCI ``ImageConfig``. Fields a builder
does not carry forward (``container_config``, ``docker_version``) are dropped
on purpose, as BuildKit does; a pulled image keeps its original bytes as a
blob, so nothing is lost for images we do not modify.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import field, replace
from types import MappingProxyType
from typing import Any

from lamina.errors import LaminaError
from lamina.model import model
from lamina.oci.digest import Digest
from lamina.oci.manifest import encode_json


@model
class Healthcheck:
    """HEALTHCHECK; durations in nanoseconds, 0 = inherit the default."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period), ("StartInterval", self.start_interval),
                           ("Retries", self.retries)):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Healthcheck:
        return cls(tuple(data.get("Test") or ()), int(data.get("Interval") or 0),
                   int(data.get("Timeout") or 0), int(data.get("StartPeriod") or 0),
                   int(data.get("StartInterval") or 0), int(data.get("Retries") or 0))


class _Derived:
    """A slot for a value derived from a frozen config: not a field (equality, ``replace``, repr ignore it)."""

    __slots__ = ("_env_map",)


@model
class ContainerConfig(_Derived):
    """What a container started from the image gets by default (``config`` in JSON)."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()
    args_escaped: bool = False

    def env_dict(self) -> Mapping[str, str]:
        """The variables by name (the last of a repeated name wins); read-only, made once per config.

        Made once because a Dockerfile of 10,000 ENVs must not rebuild it at every step.
        """
        cached: dict[str, str] | None = getattr(self, "_env_map", None)
        if cached is None:
            cached = {}
            for item in self.env:
                key, _, value = item.partition("=")
                cached[key] = value
            object.__setattr__(self, "_env_map", cached)
        return MappingProxyType(cached)

    def with_env(self, key: str, value: str) -> ContainerConfig:
        """Set one variable, keeping its position if already present (as Docker does)."""
        if key not in self.env_dict():  # the common case, without a scan of every variable
            new = replace(self, env=(*self.env, f"{key}={value}"))
            object.__setattr__(new, "_env_map", {**getattr(self, "_env_map"), key: value})  # noqa: B009
            return new
        items = list(self.env)
        for i, item in enumerate(items):
            if item.partition("=")[0] == key:
                items[i] = f"{key}={value}"
                break
        return replace(self, env=tuple(items))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.healthcheck:
            out["Healthcheck"] = self.healthcheck.to_json()
        if self.args_escaped:
            out["ArgsEscaped"] = True
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        if self.shell:
            out["Shell"] = list(self.shell)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ContainerConfig:
        if not data:
            return cls()
        hc = data.get("Healthcheck")
        return cls(
            user=str(data.get("User") or ""),
            exposed_ports=tuple(data.get("ExposedPorts") or ()),
            env=tuple(data.get("Env") or ()),
            entrypoint=tuple(data.get("Entrypoint") or ()),
            cmd=tuple(data.get("Cmd") or ()),
            volumes=tuple(data.get("Volumes") or ()),
            working_dir=str(data.get("WorkingDir") or ""),
            labels=dict(data.get("Labels") or {}),
            stop_signal=str(data.get("StopSignal") or ""),
            healthcheck=Healthcheck.from_json(hc) if hc else None,
            on_build=tuple(data.get("OnBuild") or ()),
            shell=tuple(data.get("Shell") or ()),
            args_escaped=bool(data.get("ArgsEscaped")),
        )


@model
class History:
    created_by: str = ""
    created: str | None = None
    comment: str = ""
    author: str = ""
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        if self.created_by:
            out["created_by"] = self.created_by
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> History:
        return cls(str(data.get("created_by") or ""), data.get("created") or None,
                   str(data.get("comment") or ""), str(data.get("author") or ""),
                   bool(data.get("empty_layer")))


@model
class ImageConfig:
    """The config blob. ``diff_ids`` are the uncompressed layer digests, base first."""

    config: ContainerConfig = field(default_factory=ContainerConfig)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    os_version: str | None = None
    created: str | None = None
    author: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture}
        if self.author:
            out["author"] = self.author
        out["config"] = self.config.to_json()
        if self.created:
            out["created"] = self.created
        out["history"] = [h.to_json() for h in self.history]
        out["os"] = self.os
        if self.os_version:
            out["os.version"] = self.os_version
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        if self.variant:
            out["variant"] = self.variant
        return out

    def encode(self) -> bytes:
        return encode_json(self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageConfig:
        try:
            rootfs = data.get("rootfs") or {}
            return cls(
                config=ContainerConfig.from_json(data.get("config")),
                diff_ids=tuple(Digest.parse(d) for d in rootfs.get("diff_ids") or ()),
                history=tuple(History.from_json(h) for h in data.get("history") or ()),
                architecture=str(data.get("architecture") or ""),
                os=str(data.get("os") or ""),
                variant=data.get("variant") or None,
                os_version=data.get("os.version") or None,
                created=data.get("created") or None,
                author=str(data.get("author") or ""),
            )
        except (TypeError, AttributeError, ValueError) as exc:
            raise LaminaError(f"malformed image config: {exc}") from exc

    @classmethod
    def decode(cls, data: bytes) -> ImageConfig:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LaminaError(f"malformed image config: {exc}") from exc
        if not isinstance(doc, dict):
            raise LaminaError("malformed image config: not a JSON object")
        return cls.from_json(doc)
