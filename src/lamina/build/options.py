"""What a build is asked to do: one immutable value, filled by the CLI or the API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
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
    secrets: Mapping[str, Path] = field(default_factory=dict)
