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
    """The one byte string for ``inputs``: JSON, sorted keys, no spaces.

    Injective over what keys are made of: str-keyed dicts, lists/tuples,
    str, int, float, bool and None (a tuple is written as the list it equals;
    floats use their round-trip repr, so ``1`` and ``1.0`` differ).
    Other values are refused rather than coerced, because json would quietly
    merge some (the int key 1 and the str key "1"). Strings holding
    surrogate escapes (bytes that were not UTF-8) are encoded with
    ``surrogatepass``, which no valid character's encoding can equal.
    """
    _check(inputs)
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def _check(value: Any) -> None:
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"cache key input has a non-string key: {name!r}")
            _check(item)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check(item)
        return
    raise TypeError(f"cache key input of type {type(value).__name__} has no canonical form")


def step_key(parent: str, instruction: str, inputs: Mapping[str, Any]) -> str:
    """The key of a step on top of ``parent`` (a key, or ``base:<digest>``)."""
    doc = {"v": KEY_VERSION, "parent": parent, "instruction": instruction, "inputs": dict(inputs)}
    return "sha256:" + hashlib.sha256(canonical(doc)).hexdigest()


def base_key(manifest_digest: str | None) -> str:
    """The root of a chain: an image's manifest digest, or scratch."""
    return f"base:{manifest_digest}" if manifest_digest else "base:scratch"
