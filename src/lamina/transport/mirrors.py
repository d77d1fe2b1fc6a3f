"""Registry settings from config files: Docker Hub mirrors and insecure registries.

A site without Docker Hub access (or with a pull-through cache) lists
mirrors; ``docker.io`` pulls try each in turn and fall back to Docker Hub
itself, as dockerd does. Insecure registries are spoken to over plain HTTP
(loopback ones always are). The keys are docker's ``daemon.json`` keys, so
one file can serve both tools::

    {"registry-mirrors": ["https://mirror.example.com", "http://127.0.0.1:5000"],
     "insecure-registries": ["registry.lan:5000", "10.0.0.0/8"]}

Files read, their lists concatenated in this order (earlier mirrors first):
``$LAMINA_CONFIG`` if set, else ``$XDG_CONFIG_HOME/lamina/registries.toml``
or ``registries.json`` (``~/.config`` by default), then docker's
``/etc/docker/daemon.json``. TOML files use the same keys. A missing file is
no error; a malformed one is, naming the file.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lamina.errors import RegistryError
from lamina.model import model

if TYPE_CHECKING:
    from lamina.transport.registry.client import RegistryClient

DOCKER_DAEMON_JSON = Path("/etc/docker/daemon.json")
DOCKER_HUB = frozenset({"docker.io", "index.docker.io"})


@model
class Mirror:
    domain: str          # host[:port], as a client's domain
    insecure: bool       # given as http://


@model
class RegistryConfig:
    mirrors: tuple[Mirror, ...] = ()
    insecure: tuple[str, ...] = ()   # host[:port] or a CIDR range

    def mirrors_for(self, domain: str) -> tuple[Mirror, ...]:
        """Mirrors apply to Docker Hub only (docker's ``registry-mirrors`` rule)."""
        return self.mirrors if domain in DOCKER_HUB else ()

    def is_insecure(self, domain: str) -> bool:
        host = _host(domain)
        for entry in self.insecure:
            if entry in (domain, host):
                return True
            if "/" in entry:
                try:
                    if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
        return False


def parse_mirror(url: str) -> Mirror:
    """``https://host[:port]`` (the default scheme) or ``http://host[:port]``; no path."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise RegistryError(f"invalid registry mirror {url!r}: expected http(s)://HOST[:PORT]")
    return Mirror(parts.netloc, parts.scheme == "http")


def parse_config(doc: Mapping[str, Any], where: str = "config") -> RegistryConfig:
    """The settings in one parsed file; other keys (a whole daemon.json) are ignored."""
    mirrors = _strings(doc, "registry-mirrors", where)
    insecure = _strings(doc, "insecure-registries", where)
    return RegistryConfig(tuple(parse_mirror(m) for m in mirrors), tuple(insecure))


def merge(configs: Iterable[RegistryConfig]) -> RegistryConfig:
    mirrors: dict[Mirror, None] = {}
    insecure: dict[str, None] = {}
    for config in configs:
        mirrors.update(dict.fromkeys(config.mirrors))
        insecure.update(dict.fromkeys(config.insecure))
    return RegistryConfig(tuple(mirrors), tuple(insecure))


def config_paths() -> list[Path]:
    explicit = os.environ.get("LAMINA_CONFIG")
    if explicit:
        own = [Path(explicit)]
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "lamina"
        own = [base / "registries.toml", base / "registries.json"]
    return [*own, DOCKER_DAEMON_JSON]


def load(paths: Iterable[Path] | None = None) -> RegistryConfig:
    """The merged settings of the files that exist among ``paths`` (default: :func:`config_paths`)."""
    found = []
    for path in config_paths() if paths is None else paths:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        found.append(parse_config(_decode(path, data), str(path)))
    return merge(found)


def registry_client(domain: str, config: RegistryConfig | None = None, *, insecure: bool = False,
                    tries: int = 4) -> RegistryClient:
    """A client for ``domain`` with the docker config's credentials and the configured TLS rule."""
    from lamina.transport.credentials import CredentialStore
    from lamina.transport.registry.client import RegistryClient

    plain = insecure or (config or load()).is_insecure(domain)
    return RegistryClient(domain, credentials=CredentialStore(), insecure=True if plain else None, tries=tries)


def _decode(path: Path, data: bytes) -> Mapping[str, Any]:
    try:
        if path.suffix == ".toml":
            import tomllib

            doc: Any = tomllib.loads(data.decode())
        else:
            doc = json.loads(data) if data.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: {exc}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{path}: expected an object at the top level")
    return doc


def _strings(doc: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryError(f"{where}: {key!r} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def _host(domain: str) -> str:
    if domain.startswith("["):
        return domain[1:].partition("]")[0]
    return domain.partition(":")[0] if domain.count(":") == 1 else domain


__all__ = ["Mirror", "RegistryConfig", "config_paths", "load", "merge", "parse_config", "parse_mirror",
           "registry_client"]
