"""Content digests: ``sha256:<64 hex>``.

``Digest`` is the one name for a content address. By convention (as in
go-containerregistry) a layer's ``digest`` is of its compressed blob and its
``diff_id`` of the uncompressed tar; both are Digests.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from lamina.errors import LaminaError

_HEX = {"sha256": 64, "sha512": 128}
# The OCI spec (and go-digest) require lower-case hex for sha256 and sha512.
_PATTERN = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-f0-9]{32,})$")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """An algorithm and its lower-case hex value.

    ``parse`` is strict, as the OCI spec and go-digest are: upper-case hex is
    refused rather than folded, so a digest always prints as it was given.
    """

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        m = _PATTERN.fullmatch(text)
        if not m or _HEX.get(m.group(1)) != len(m.group(2)):
            raise LaminaError(f"invalid digest: {text!r}")
        return cls(m.group(1), m.group(2))

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls("sha256", hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hasher(cls, hasher: hashlib._Hash) -> Digest:
        return cls(hasher.name, hasher.hexdigest())

    @property
    def short(self) -> str:
        """The 12 hex characters docker shows as an image ID."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def is_digest(text: str) -> bool:
    m = _PATTERN.fullmatch(text)
    return bool(m) and _HEX.get(m.group(1)) == len(m.group(2))  # type: ignore[union-attr]
