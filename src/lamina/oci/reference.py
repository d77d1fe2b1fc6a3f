"""Image references, parsed and normalized the way docker does.

``busybox`` means ``docker.io/library/busybox:latest``; the first path
component is a registry host only when it contains ``.`` or ``:`` or is
``localhost``. ``str(ref)`` is the full form, ``ref.familiar`` the short one
docker prints.
"""

from __future__ import annotations

import re
from dataclasses import replace

from lamina.errors import ReferenceError_
from lamina.model import model
from lamina.oci.digest import Digest, is_digest

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)  # Go's \w is ASCII-only
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")


@model
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalize; a reference with neither tag nor digest gets ``latest``."""
        ref = parse_loose(text)
        if ref.tag is None and ref.digest is None:
            ref = replace(ref, tag=DEFAULT_TAG)
        return ref

    @property
    def repository(self) -> str:
        """``domain/path``: what a tag names within a registry."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar(self) -> str:
        """The short form docker prints: ``busybox:latest``, ``localhost:5000/app:v1``."""
        return _render(_familiar_name(self.domain, self.path), self.tag, self.digest)

    @property
    def familiar_repository(self) -> str:
        return _familiar_name(self.domain, self.path)

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if known, else the tag."""
        return str(self.digest) if self.digest else (self.tag or DEFAULT_TAG)

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        return _render(self.repository, self.tag, self.digest)


def parse_loose(text: str) -> Reference:
    """Parse without adding a default tag (for ``lamina images NAME`` filters)."""
    if not text or text != text.strip():
        raise ReferenceError_(f"invalid reference format: {text!r}")
    if _IDENTIFIER_RE.match(text):  # docker refuses a bare image ID as a name
        raise ReferenceError_(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    rest, digest = text, None
    if "@" in rest:
        rest, _, dgst = rest.partition("@")
        if not is_digest(dgst):
            raise ReferenceError_(f"invalid reference format: {text!r}: bad digest")
        digest = Digest.parse(dgst)
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise ReferenceError_(f"invalid reference format: {text!r}: bad tag {tag!r}")
    domain, path = _split_domain(rest)
    if not _DOMAIN_RE.match(domain):
        raise ReferenceError_(f"invalid reference format: {text!r}: bad registry host {domain!r}")
    if path != path.lower():
        raise ReferenceError_(f"invalid reference format: repository name ({path}) must be lowercase")
    if not _PATH_RE.match(path) or len(domain) + 1 + len(path) > 255:
        raise ReferenceError_(f"invalid reference format: {text!r}")
    return Reference(domain, path, tag, digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path


def _familiar_name(domain: str, path: str) -> str:
    if domain != DEFAULT_DOMAIN:
        return f"{domain}/{path}"
    return path.removeprefix("library/") if path.count("/") == 1 else path


def _render(name: str, tag: str | None, digest: Digest | None) -> str:
    out = name
    if tag:
        out += f":{tag}"
    if digest:
        out += f"@{digest}"
    return out
