"""Cache keys: deterministic, sensitive to every input, and never ambiguous."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from lamina.build.cachekey import KEY_VERSION, base_key, canonical, step_key

PARENT = base_key("sha256:" + "a" * 64)
INSTR = "RUN make"
INPUTS: dict[str, Any] = {"env": {"A": "1"}, "files": "sha256:" + "b" * 64, "args": ["x", "y"]}

# Each line changes one thing about (parent, instruction, inputs); every key must differ.
VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    (PARENT, INSTR, INPUTS),
    (base_key("sha256:" + "c" * 64), INSTR, INPUTS),
    (base_key(None), INSTR, INPUTS),
    (PARENT, "RUN make ", INPUTS),
    (PARENT, "RUN  make", INPUTS),
    (PARENT, INSTR, {**INPUTS, "env": {"A": "2"}}),
    (PARENT, INSTR, {**INPUTS, "env": {"A": "1", "B": ""}}),
    (PARENT, INSTR, {**INPUTS, "env": {}}),
    (PARENT, INSTR, {**INPUTS, "files": "sha256:" + "d" * 64}),
    (PARENT, INSTR, {**INPUTS, "args": ["y", "x"]}),
    (PARENT, INSTR, {**INPUTS, "args": ["x y"]}),
    (PARENT, INSTR, {**INPUTS, "args": ["x", "y", ""]}),
    (PARENT, INSTR, {k: v for k, v in INPUTS.items() if k != "args"}),
    (PARENT, INSTR, {**INPUTS, "extra": None}),
]

# Pairs a separator-joining encoding would confuse.
AMBIGUOUS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"a": "b,c"}, {"a": "b", "c": ""}),
    ({"a": "b,c"}, {"a": "b", "c": None}),
    ({"a": "b=c"}, {"a=b": "c"}),
    ({"a": "b:c"}, {"a:b": "c"}),
    ({"a": ["b", "c"]}, {"a": ["b,c"]}),
    ({"a": ["b", "c"]}, {"a": "b c"}),
    ({"a": 1}, {"a": "1"}),
    ({"a": True}, {"a": "true"}),
    ({"a": None}, {"a": "null"}),
    ({"a": None}, {}),
    ({"a": ""}, {}),
    ({"a": {"b": "c"}}, {"a.b": "c"}),
    ({"a": '"b"'}, {"a": "b"}),
    ({"a": "b\\"}, {"a": "b"}),
    ({"a": "é"}, {"a": "e\u0301"}),  # no Unicode normalization: different bytes, different keys
]


def test_step_key_shape_and_determinism() -> None:
    key = step_key(PARENT, INSTR, INPUTS)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", key)
    assert step_key(PARENT, INSTR, dict(INPUTS)) == key
    reordered = dict(reversed(list(INPUTS.items())))
    assert step_key(PARENT, INSTR, reordered) == key  # mapping order does not matter


def test_step_key_golden() -> None:
    doc = {"v": KEY_VERSION, "parent": "base:scratch", "instruction": "ENV A=1", "inputs": {"x": 1}}
    expected = "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert step_key("base:scratch", "ENV A=1", {"x": 1}) == expected


def test_every_change_changes_the_key() -> None:
    keys = [step_key(*v) for v in VARIANTS]
    assert len(set(keys)) == len(VARIANTS)


@pytest.mark.parametrize(("left", "right"), AMBIGUOUS)
def test_no_ambiguity(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert canonical(left) != canonical(right)
    assert step_key(PARENT, INSTR, left) != step_key(PARENT, INSTR, right)


def test_instruction_and_inputs_cannot_trade_places() -> None:
    assert step_key(PARENT, "RUN a", {"b": "c"}) != step_key(PARENT, "RUN a b", {"": "c"})
    assert step_key("base:x", "y", {}) != step_key("base:x y", "", {})


def test_chain() -> None:
    first = step_key(base_key(None), "FROM scratch", {})
    second = step_key(first, INSTR, INPUTS)
    assert second != step_key(base_key(None), INSTR, INPUTS)


@pytest.mark.parametrize(("digest", "expected"), [
    (None, "base:scratch"),
    ("", "base:scratch"),
    ("sha256:" + "a" * 64, "base:sha256:" + "a" * 64),
])
def test_base_key(digest: str | None, expected: str) -> None:
    assert base_key(digest) == expected


@pytest.mark.parametrize(("inputs", "expected"), [
    ({}, b"{}"),
    ({"b": 1, "a": [True, None]}, b'{"a":[true,null],"b":1}'),
    ({"z": {"y": "é", "x": 1.5}}, '{"z":{"x":1.5,"y":"é"}}'.encode()),
])
def test_canonical_golden(inputs: dict[str, Any], expected: bytes) -> None:
    assert canonical(inputs) == expected


# what json would merge or cannot encode is refused or kept apart (build --explain work) -------------
def test_surrogate_escapes_are_encoded_injectively() -> None:
    raw = b"caf\xe9".decode("utf-8", "surrogateescape")  # a heredoc that is not UTF-8
    assert canonical({"a": raw}) != canonical({"a": "café"})
    assert step_key(PARENT, INSTR, {"stdin": raw}) != step_key(PARENT, INSTR, {"stdin": "café"})


@pytest.mark.parametrize("bad", [{1: "x"}, {"a": {(1, 2): "x"}}, {"a": b"bytes"}, {"a": {1, 2}}, {"a": object()}])
def test_values_without_one_canonical_form_are_refused(bad: dict[Any, Any]) -> None:
    with pytest.raises(TypeError):
        canonical(bad)
