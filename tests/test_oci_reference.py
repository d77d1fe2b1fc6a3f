"""Image references, normalized as docker's distribution/reference ParseNormalizedNamed does."""

from __future__ import annotations

import pytest

from lamina.errors import ReferenceError_
from lamina.oci.digest import Digest
from lamina.oci.reference import Reference, parse_loose

H = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
DIG = f"sha256:{H}"

# input, full form, familiar form, domain, path, tag, digest
VALID = [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest", "docker.io", "library/busybox", "latest", None),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest", "docker.io", "library/busybox",
     "latest", None),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest", "docker.io", "library/busybox",
     "latest", None),
    ("index.docker.io/x", "docker.io/library/x:latest", "x:latest", "docker.io", "library/x", "latest", None),
    ("index.docker.io/user/x:1", "docker.io/user/x:1", "user/x:1", "docker.io", "user/x", "1", None),
    ("user/app", "docker.io/user/app:latest", "user/app:latest", "docker.io", "user/app", "latest", None),
    ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest", "docker.io", "library/a/b",
     "latest", None),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest", "localhost", "app", "latest", None),
    ("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000", "a/b", "t", None),
    ("127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox:latest",
     "127.0.0.1:5000", "busybox", "latest", None),
    ("[::1]:5000/app:v1", "[::1]:5000/app:v1", "[::1]:5000/app:v1", "[::1]:5000", "app", "v1", None),
    ("ghcr.io/owner/repo/sub:v1.2.3-rc_1", "ghcr.io/owner/repo/sub:v1.2.3-rc_1",
     "ghcr.io/owner/repo/sub:v1.2.3-rc_1", "ghcr.io", "owner/repo/sub", "v1.2.3-rc_1", None),
    ("Registry/app", "Registry/app:latest", "Registry/app:latest", "Registry", "app", "latest", None),
    ("a/b@" + DIG, f"docker.io/a/b@{DIG}", f"a/b@{DIG}", "docker.io", "a/b", None, DIG),
    ("busybox:1.36@" + DIG, f"docker.io/library/busybox:1.36@{DIG}", f"busybox:1.36@{DIG}", "docker.io",
     "library/busybox", "1.36", DIG),
    ("localhost:5000@" + DIG, f"docker.io/library/localhost:5000@{DIG}", f"localhost:5000@{DIG}", "docker.io",
     "library/localhost", "5000", DIG),
    ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000", "docker.io", "library/localhost",
     "5000", None),  # no slash: a name and a tag, as in docker
    ("a__b-c---d/e_f.g", "docker.io/a__b-c---d/e_f.g:latest", "a__b-c---d/e_f.g:latest", "docker.io",
     "a__b-c---d/e_f.g", "latest", None),
    ("busybox:" + "t" * 128, "docker.io/library/busybox:" + "t" * 128, "busybox:" + "t" * 128, "docker.io",
     "library/busybox", "t" * 128, None),
    (H + ":v1", f"docker.io/library/{H}:v1", f"{H}:v1", "docker.io", f"library/{H}", "v1", None),
]

INVALID = [
    "",
    " ",
    "busybox ",
    " busybox",
    "busybox\n",
    ":tag",
    "Busybox",
    "docker.io/Library/busybox",
    "localhost:5000/A/b",
    "a//b",
    "a/b/",
    "/a",
    "a:",
    "a:.tag",  # a tag starts with a word character
    "a:-tag",
    "a:tag!",
    "a:vé",  # Go's \w is ASCII
    "busybox:" + "t" * 129,
    "a:b:c",
    "a@sha256:abc",
    "a@sha256:" + H.upper(),
    "a@md5:" + "0" * 32,
    "a@",
    "@" + DIG,
    "_a",
    "a_",
    "a..b",
    "a___b",
    "-host/a",
    "host-/a",
    "host:port/a",
    "[::1/a",
    H,  # a bare 64-hex string is an image ID, never a name
    "a/" + "b" * 250,  # docker.io/a/bbb… exceeds 255 characters
]


@pytest.mark.parametrize(("text", "full", "familiar", "domain", "path", "tag", "digest"), VALID)
def test_parse_valid(text: str, full: str, familiar: str, domain: str, path: str, tag: str | None,
                     digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.domain, ref.path, ref.tag) == (domain, path, tag)
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert Reference.parse(full) == ref
    assert Reference.parse(familiar) == ref


@pytest.mark.parametrize("text", INVALID)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(ReferenceError_, match="invalid"):
        Reference.parse(text)


def test_uppercase_repository_message() -> None:
    with pytest.raises(ReferenceError_, match=r"repository name \(library/Busybox\) must be lowercase"):
        Reference.parse("Busybox")


LOOSE = [
    ("busybox", None, "docker.io/library/busybox"),
    ("busybox:1", "1", "docker.io/library/busybox:1"),
    ("a/b@" + DIG, None, f"docker.io/a/b@{DIG}"),
]


@pytest.mark.parametrize(("text", "tag", "full"), LOOSE)
def test_parse_loose_adds_no_tag(text: str, tag: str | None, full: str) -> None:
    ref = parse_loose(text)
    assert ref.tag == tag
    assert str(ref) == full


# reference, repository, familiar repository, what the registry is asked for
PARTS = [
    ("busybox", "docker.io/library/busybox", "busybox", "latest"),
    ("user/app:v2", "docker.io/user/app", "user/app", "v2"),
    ("localhost:5000/app:v1@" + DIG, "localhost:5000/app", "localhost:5000/app", DIG),
    ("quay.io/org/app@" + DIG, "quay.io/org/app", "quay.io/org/app", DIG),
]


@pytest.mark.parametrize(("text", "repository", "familiar_repository", "reference"), PARTS)
def test_parts(text: str, repository: str, familiar_repository: str, reference: str) -> None:
    ref = Reference.parse(text)
    assert ref.repository == repository
    assert ref.familiar_repository == familiar_repository
    assert ref.reference == reference


def test_with_tag_and_digest() -> None:
    ref = Reference.parse("busybox@" + DIG)
    tagged = ref.with_tag("1.36")
    assert str(tagged) == "docker.io/library/busybox:1.36"  # a new tag drops the digest
    pinned = tagged.with_digest(Digest.parse(DIG))
    assert str(pinned) == f"docker.io/library/busybox:1.36@{DIG}"
    assert ref == Reference.parse("busybox@" + DIG)  # unchanged
