"""What a build is asked to do: one immutable value, filled by the CLI or the API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.model import model

if TYPE_CHECKING:
    from lamina.build.mounts import SecretSource
    from lamina.transport.cacheio import CacheSpec


@model
class BuildOptions:
    context: Path
    dockerfile: Path | None = None          # default: <context>/Dockerfile
    dockerfile_text: str | None = None      # `-f -`: the Dockerfile given on stdin
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    pull: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = "host"
    platform: str | None = None
    timestamp: int | None = None            # SOURCE_DATE_EPOCH / --timestamp
    compression: str = "gzip"
    oci: bool = False                       # write OCI media types instead of Docker's
    secrets: Mapping[str, Path | SecretSource] = field(default_factory=dict)  # id → file (or env var)
    cache_from: tuple[CacheSpec, ...] = ()    # --cache-from: records imported at build start
    cache_to: tuple[CacheSpec, ...] = ()      # --cache-to: records exported after the build
