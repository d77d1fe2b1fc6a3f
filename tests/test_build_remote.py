"""ADD from URLs: naming, flag checks, fetching from a local HTTP server, and whole builds."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import re
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import pytest

from helpers.builds import Build, dockerfile_runner
from lamina.build.remote import UNNAMED, check_flags, fetch, file_name, is_git, is_url
from lamina.errors import BuildError
from lamina.image.image import Layer
from lamina.store.store import Store

LAST_MODIFIED = 1_600_000_000


@dataclass
class Site:
    """What the test server serves: path → body, path → redirect target; requests seen."""

    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    gzipped: set[str] = field(default_factory=set)  # sent with Content-Encoding: gzip
    requests: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def site() -> Iterator[Site]:
    served = Site()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            served.requests.append(self.path)
            if self.path in served.redirects:
                self.send_response(302)
                self.send_header("Location", served.redirects[self.path])
                self.end_headers()
                return
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            if self.path in served.gzipped and "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Last-Modified", formatdate(LAST_MODIFIED, usegmt=True))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("url", "name"), [
    ("http://example.com/foobar", "foobar"),
    ("https://example.com/a/b/c.tar.gz?x=1#frag", "c.tar.gz"),
    ("http://example.com/dir/", "dir"),
    ("http://example.com/with%20space", "with space"),
    ("http://example.com", UNNAMED),
    ("http://example.com/", UNNAMED),
])
def test_file_name_is_the_url_paths_last_element(url: str, name: str) -> None:
    assert file_name(url) == name


@pytest.mark.parametrize(("source", "url", "git"), [
    ("https://example.com/f", True, False),
    ("http://example.com/f.tar", True, False),
    ("https://github.com/moby/buildkit.git", False, True),
    ("https://github.com/moby/buildkit.git#v0.10.1", False, True),
    ("git@github.com:moby/buildkit.git", False, True),
    ("git://example.com/repo", False, True),
    ("local/file", False, False),
    ("httpfile", False, False),
])
def test_what_is_a_url_and_what_a_git_repository(source: str, url: bool, git: bool) -> None:
    assert (is_url(source), is_git(source)) == (url, git)


def test_a_plain_path_is_told_from_a_git_source_without_its_parser() -> None:
    """Every COPY source is asked whether it is a Git repository: a path without ':' is never one."""
    import subprocess
    import sys

    code = ("import sys; from lamina.build.remote import is_git; "
            "assert not is_git('src/app') and not is_git('a@b'); assert 'lamina.build.gitsource' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("sources", "checksum", "message"), [
    (("https://e.com/a", "https://e.com/b"), "sha256:" + "0" * 64, "checksum can't be specified for multiple sources"),
    (("local.txt",), "sha256:" + "0" * 64, "checksum requires HTTP(S) or Git sources"),
    (("https://e.com/a",), "md5:abc", "only sha256 is supported"),
    (("https://e.com/a",), "sha256:abc", "invalid checksum digest format"),
    (("git@github.com:o/r.git", "local"), None, "ADD from a Git repository takes it as its only source"),
    (("git@github.com:o/r.git",), "sha256:" + "0" * 64, "invalid checksum 'sha256:"),
])
def test_check_flags_refuses_what_buildkit_refuses(sources: tuple[str, ...], checksum: str | None,
                                                   message: str) -> None:
    with pytest.raises(BuildError, match=re.escape(message)):
        check_flags(sources, checksum)
    check_flags(("https://e.com/a",), "sha256:" + "a" * 64)
    check_flags(("https://e.com/a", "local"), None)
    check_flags(("https://e.com/r.git#v1:docs",), "be1f38e")


def test_fetch_saves_content_digest_and_last_modified(site: Site, tmp_path: Path) -> None:
    site.files["/files/data.bin"] = b"payload"
    site.redirects["/latest"] = "/files/data.bin"
    got = fetch(site.url + "/files/data.bin", tmp_path)
    assert got.path.read_bytes() == b"payload" and got.digest == _sha(b"payload")
    assert (got.name, got.mtime) == ("data.bin", LAST_MODIFIED)
    redirected = fetch(site.url + "/latest", tmp_path, checksum=_sha(b"payload"))
    assert redirected.name == "latest"  # named after the URL written in the Dockerfile
    assert site.requests == ["/files/data.bin", "/latest", "/files/data.bin"]


def test_fetch_undoes_a_gzip_transfer_encoding_and_bounds_redirects(site: Site, tmp_path: Path) -> None:
    site.files["/page.txt"] = b"text " * 1000
    site.gzipped.add("/page.txt")
    got = fetch(site.url + "/page.txt", tmp_path)
    assert got.path.read_bytes() == b"text " * 1000 and got.digest == _sha(b"text " * 1000)
    site.redirects["/loop"] = "/loop"
    with pytest.raises(BuildError, match=r"^fetching .*/loop: more than 20 redirects$"):
        fetch(site.url + "/loop", tmp_path)


def test_fetch_errors_are_one_line(site: Site, tmp_path: Path) -> None:
    site.files["/f"] = b"real"
    with pytest.raises(BuildError, match=r"^checksum mismatch for .*/f: expected sha256:0{64}, got sha256:"):
        fetch(site.url + "/f", tmp_path, checksum="sha256:" + "0" * 64)
    with pytest.raises(BuildError, match=r"^fetching .*/missing: HTTP 404"):
        fetch(site.url + "/missing", tmp_path)
    with pytest.raises(BuildError, match=r"^fetching http://127.0.0.1:1/x: ") as info:
        fetch("http://127.0.0.1:1/x", tmp_path)
    assert "\n" not in str(info.value)


# whole builds ---------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlayfs)")


def _tar_gz(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    from helpers.images import busybox_image

    opened = Store(tmp_path / "store")
    busybox_image(opened, "busybox:test")
    yield opened
    assert not any((opened.root / "tmp").iterdir())  # downloads are removed after their step


@pytest.fixture
def build(store: Store, tmp_path: Path) -> Build:
    return dockerfile_runner(store, tmp_path / "ctx")


def _members(store: Store, layer: Layer) -> dict[str, tuple[str, int, bytes]]:
    from lamina.image.layerio import open_layer

    out = {}
    with open_layer(store.blobs.open(layer.digest)) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            out[member.name] = (f"{member.mode:04o}", int(member.mtime), data)
    return out


@pytest.mark.integration
@needs_root
def test_add_url_lands_0600_unextracted_and_its_content_keys_the_cache(site: Site, store: Store,
                                                                       build: Build) -> None:
    archive = _tar_gz("inside.txt", b"in")
    site.files["/pkg.tar.gz"] = archive
    site.files["/tool"] = b"v1"
    dockerfile = f"FROM busybox:test\nADD {site.url}/pkg.tar.gz /dl/\nADD --chmod=755 {site.url}/tool /usr/bin/tool\n"
    layers, cached = build(dockerfile)
    assert cached == []
    assert _members(store, layers[-2])["dl/pkg.tar.gz"] == ("0600", LAST_MODIFIED, archive)
    assert _members(store, layers[-1])["usr/bin/tool"] == ("0755", LAST_MODIFIED, b"v1")
    _, cached = build(dockerfile)
    assert cached == [2, 3] and site.requests.count("/tool") == 2  # fetched again, unchanged: cached
    site.files["/tool"] = b"v2"
    layers, cached = build(dockerfile)
    assert cached == [2]  # a changed remote file changes the key
    assert _members(store, layers[-1])["usr/bin/tool"][2] == b"v2"


@pytest.mark.integration
@needs_root
def test_add_checksum_keys_without_downloading_and_mismatch_names_the_line(site: Site, build: Build) -> None:
    site.files["/f"] = b"pinned"
    dockerfile = f"FROM busybox:test\nADD --checksum={_sha(b'pinned')} {site.url}/f /f\n"
    build(dockerfile)
    _, cached = build(dockerfile)
    assert cached == [2] and site.requests == ["/f"]  # the cached rebuild made no request
    with pytest.raises(BuildError, match=r"^Dockerfile:3: checksum mismatch for http://.*/f: expected sha256:0{64}"):
        build(f"FROM busybox:test\nENV A=1\nADD --checksum=sha256:{'0' * 64} {site.url}/f /f\n")
    with pytest.raises(BuildError, match=r"^Dockerfile:2: fetching http://.*/gone: HTTP 404"):
        build(f"FROM busybox:test\nADD {site.url}/gone /gone\n")
    with pytest.raises(BuildError, match=r"^Dockerfile:2: source can't be a URL for COPY"):
        build(f"FROM busybox:test\nCOPY {site.url}/f /f\n")


@pytest.mark.integration
@needs_root
def test_add_unpack_extracts_remote_archives_and_keeps_local_ones_whole(site: Site, store: Store,
                                                                        build: Build, tmp_path: Path) -> None:
    archive = _tar_gz("inside.txt", b"in")
    site.files["/pkg.tar.gz"] = archive
    (tmp_path / "ctx").mkdir(exist_ok=True)
    (tmp_path / "ctx" / "local.tar.gz").write_bytes(archive)
    layers, _ = build(f"FROM busybox:test\nADD --unpack=true {site.url}/pkg.tar.gz /remote\n"
                      "ADD --unpack=false local.tar.gz /kept/\nADD --unpack local.tar.gz /local/\n")
    assert _members(store, layers[-3])["remote/inside.txt"][2] == b"in"
    assert _members(store, layers[-2])["kept/local.tar.gz"][2] == archive
    assert _members(store, layers[-1])["local/inside.txt"][2] == b"in"


@pytest.mark.integration
@needs_root
def test_add_checksum_is_expanded_from_args(site: Site, build: Build) -> None:
    site.files["/f"] = b"pinned"
    dockerfile = f"FROM busybox:test\nARG SUM={_sha(b'pinned')}\nADD --checksum=$SUM {site.url}/f /f\n"
    build(dockerfile)
    _, cached = build(dockerfile)
    assert cached == [2, 3] and site.requests == ["/f"]
