"""Digest parsing, hashing and printing, as tables of strings."""

from __future__ import annotations

import hashlib

import pytest

from lamina.errors import LaminaError
from lamina.oci.digest import Digest, is_digest

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
HELLO_SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # b"hello"
EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()

VALID = [
    (f"sha256:{EMPTY_SHA256}", "sha256", EMPTY_SHA256),
    (f"sha256:{HELLO_SHA256}", "sha256", HELLO_SHA256),
    (f"sha512:{EMPTY_SHA512}", "sha512", EMPTY_SHA512),
]

INVALID = [
    "",
    "sha256",
    "sha256:",
    EMPTY_SHA256,  # no algorithm
    f"sha256:{EMPTY_SHA256[:-1]}",  # 63 hex
    f"sha256:{EMPTY_SHA256}0",  # 65 hex
    f"sha512:{EMPTY_SHA256}",  # length of the other algorithm
    f"md5:{'0' * 32}",  # unknown algorithm
    f"SHA256:{EMPTY_SHA256}",  # algorithm is lower case
    f"sha256:{EMPTY_SHA256.upper()}",  # OCI: encoded sha256 MUST match [a-f0-9]{64}
    f"sha256:{'g' * 64}",
    f" sha256:{EMPTY_SHA256}",
    f"sha256:{EMPTY_SHA256} ",
    f"sha256:{EMPTY_SHA256}\n",
    f"sha256::{EMPTY_SHA256}",
]


@pytest.mark.parametrize(("text", "algorithm", "hex_"), VALID)
def test_parse_valid(text: str, algorithm: str, hex_: str) -> None:
    d = Digest.parse(text)
    assert (d.algorithm, d.hex) == (algorithm, hex_)
    assert str(d) == text
    assert is_digest(text)


@pytest.mark.parametrize("text", INVALID)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(LaminaError, match="invalid digest"):
        Digest.parse(text)
    assert not is_digest(text)


@pytest.mark.parametrize(("data", "expected"), [
    (b"", f"sha256:{EMPTY_SHA256}"),
    (b"hello", f"sha256:{HELLO_SHA256}"),
])
def test_of(data: bytes, expected: str) -> None:
    assert str(Digest.of(data)) == expected


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_from_hasher_names_the_algorithm(algorithm: str) -> None:
    hasher = hashlib.new(algorithm, b"hello")
    d = Digest.from_hasher(hasher)
    assert d == Digest(algorithm, hasher.hexdigest())
    assert Digest.parse(str(d)) == d


def test_short_is_docker_image_id() -> None:
    assert Digest.of(b"").short == "e3b0c44298fc"


def test_value_semantics() -> None:
    a, b = Digest.parse(f"sha256:{EMPTY_SHA256}"), Digest.of(b"")
    assert a == b and hash(a) == hash(b)
    assert sorted([Digest.of(b"hello"), Digest.of(b"")]) == [Digest.of(b"hello"), Digest.of(b"")]  # by hex
    with pytest.raises(AttributeError):
        a.hex = "0"  # type: ignore[misc]
