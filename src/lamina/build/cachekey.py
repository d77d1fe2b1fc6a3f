"""Cache keys: content-derived, chained, and unambiguous.

A step's key is the sha256 of a canonical JSON document holding the parent's
key, the step's canonical form after expansion, the variables it used and
the checksum of its file inputs. JSON with sorted keys and typed values is
an injective encoding: two different input sets can never serialize to the
same bytes (no concatenation, no separators to forge). Time never enters a
key, so the same inputs give the same key on any machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_VERSION = 1


def canonical(inputs: Mapping[str, Any]) -> bytes:
    return json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def step_key(parent: str, instruction: str, inputs: Mapping[str, Any]) -> str:
    """The key of a step on top of ``parent`` (a key, or ``base:<digest>``)."""
    doc = {"v": KEY_VERSION, "parent": parent, "instruction": instruction, "inputs": dict(inputs)}
    return "sha256:" + hashlib.sha256(canonical(doc)).hexdigest()


def base_key(manifest_digest: str | None) -> str:
    """The root of a chain: an image's manifest digest, or scratch."""
    return f"base:{manifest_digest}" if manifest_digest else "base:scratch"
