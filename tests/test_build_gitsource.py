"""ADD from Git repositories: recognising them, resolving refs, and whole builds over local servers.

The repositories are served on 127.0.0.1 two ways: dumb HTTP (a plain file
server over a bare repository, which cannot fetch a single commit, so the
full-fetch path is exercised) and ``git daemon`` (the smart protocol).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.builds import Build, dockerfile_runner
from lamina.build.gitsource import GitSource, checkout, parse, resolve
from lamina.errors import BuildError
from lamina.image.image import Layer
from lamina.store.store import Store

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlayfs)")
COMMIT_TIME = 1_700_000_000


@pytest.mark.parametrize(("source", "expected"), [
    ("https://github.com/moby/buildkit.git", GitSource("https://github.com/moby/buildkit.git")),
    ("https://h/r.git#v0.14.1:docs", GitSource("https://h/r.git", "v0.14.1", "docs")),
    ("git@github.com:moby/buildkit.git#main", GitSource("git@github.com:moby/buildkit.git", "main")),
    ("git://example.com/repo", GitSource("git://example.com/repo")),
    ("ssh://git@h/r#:sub", GitSource("ssh://git@h/r", "", "sub")),
    ("https://h/r.git##ref=v1,subdir=/d", GitSource("https://h/r.git", "v1", "/d")),
    ("https://h/r.git##commit=abc123", GitSource("https://h/r.git", "abc123", "", "abc123")),
    ("https://h/file.tar.gz", None),
    ("https://h/r.git/x", None),
    ("github.com/moby/buildkit", None),  # only build contexts take this form
    ("file:///srv/r.git", None),
    ("./r.git", None),
    ("local/dir", None),
])
def test_what_is_a_git_source(source: str, expected: GitSource | None) -> None:
    assert parse(source) == expected


def test_a_bad_csv_fragment_is_an_error() -> None:
    with pytest.raises(BuildError, match="unexpected key 'branch'"):
        parse("https://h/r.git##branch=x")


# a local repository and its servers ---------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": f"@{COMMIT_TIME} +0000", "GIT_COMMITTER_DATE": f"@{COMMIT_TIME} +0000",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@dataclass
class Repo:
    work: Path
    bare: Path
    http: str = ""  # dumb HTTP URL of the bare repository
    daemon: str = ""  # git:// URL

    def commit(self, files: dict[str, str], message: str, *, executable: tuple[str, ...] = ()) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755 if name in executable else 0o600)  # git keeps only the exec bit
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "-m", message, cwd=self.work)
        return self.head()

    def head(self) -> str:
        return _git("rev-parse", "HEAD", cwd=self.work).strip()

    def publish(self) -> None:
        _git("push", "-q", "--force", "--tags", str(self.bare), "main", cwd=self.work)
        _git("update-server-info", cwd=self.bare)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    if shutil.which("git") is None:
        pytest.skip("needs git")
    served = tmp_path / "served"
    made = Repo(tmp_path / "work", served / "app.git")
    made.work.mkdir()
    _git("init", "-q", "-b", "main", cwd=made.work)
    _git("init", "-q", "--bare", "-b", "main", str(made.bare), cwd=tmp_path)
    made.commit({"README": "hello\n", "bin/run.sh": "#!/bin/sh\necho run\n", "docs/guide.txt": "guide v1\n"},
                "one", executable=("bin/run.sh",))
    _git("tag", "-a", "-m", "release", "v1", cwd=made.work)
    made.publish()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    made.http = f"http://127.0.0.1:{server.server_address[1]}/app.git"
    port = _free_port()
    daemon = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={served}",
                               "--listen=127.0.0.1", f"--port={port}", str(served)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    made.daemon = f"git://127.0.0.1:{port}/app.git"
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield made
    daemon.terminate()
    daemon.wait(10)
    server.shutdown()
    server.server_close()


@needs_git
def test_resolve_names_the_commit_of_a_branch_tag_or_prefix(repo: Repo, tmp_path: Path) -> None:
    first = repo.head()
    for url in (repo.http, repo.daemon):
        assert resolve(GitSource(url)) == first
        assert resolve(GitSource(url, "main")) == first
        assert resolve(GitSource(url, "v1")) == first  # the annotated tag's commit, not the tag object
        assert resolve(GitSource(url, first)) == first
        assert resolve(GitSource(url, first[:8]), scratch=tmp_path / url[:4]) == first
        assert resolve(GitSource(url), checksum=first[:6]) == first
    with pytest.raises(BuildError, match=r"checksum mismatch for .*: expected commit 0000, got " + first):
        resolve(GitSource(repo.http), checksum="0000")
    with pytest.raises(BuildError, match=r"no branch, tag or commit named 'nope'"):
        resolve(GitSource(repo.daemon, "nope"))
    with pytest.raises(BuildError, match=r"^git ls-remote failed: "):
        resolve(GitSource("http://127.0.0.1:1/none.git"))


@needs_git
def test_checkout_normalizes_modes_and_times_and_drops_git_dir(repo: Repo, tmp_path: Path) -> None:
    commit = repo.head()
    tree = checkout(GitSource(repo.daemon), commit, tmp_path / "a")
    assert sorted(p.name for p in tree.iterdir()) == ["README", "bin", "docs"]
    assert (tree / "bin" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (tree / "README").stat().st_mode & 0o777 == 0o644
    assert (tree / "docs").stat().st_mode & 0o777 == 0o755
    assert int((tree / "README").stat().st_mtime) == COMMIT_TIME
    sub = checkout(GitSource(repo.http, "v1", "docs"), commit, tmp_path / "b", keep_git_dir=True)
    assert sub == tmp_path / "b" / "docs" and (tmp_path / "b" / ".git").is_dir()
    with pytest.raises(BuildError, match="no directory 'nothere'"):
        checkout(GitSource(repo.daemon, "", "nothere"), commit, tmp_path / "c")


# whole builds ---------------------------------------------------------------------------------



@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    from helpers.images import busybox_image

    opened = Store(tmp_path / "store")
    busybox_image(opened, "busybox:test")
    yield opened
    assert not any((opened.root / "tmp").iterdir())  # clones are removed after their step


@pytest.fixture
def build(store: Store, tmp_path: Path) -> Build:
    return dockerfile_runner(store, tmp_path / "ctx")


def _members(store: Store, layer: Layer) -> dict[str, tuple[str, int, int, bytes]]:
    from lamina.image.layerio import open_layer

    out = {}
    with open_layer(store.blobs.open(layer.digest)) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            out[member.name.rstrip("/")] = (f"{member.mode:04o}", member.uid, int(member.mtime), data)
    return out


@pytest.mark.integration
@needs_git
@needs_root
def test_add_git_clones_at_ref_keyed_by_commit(repo: Repo, store: Store, build: Build) -> None:
    dockerfile = (f"FROM busybox:test\nADD --chown=7:7 {repo.http}#v1:docs /docs\n"
                  f"ADD {repo.daemon}#main /src\n"
                  f"ADD --keep-git-dir=true {repo.daemon} /kept/\n")
    layers, cached = build(dockerfile)
    assert cached == []
    docs = _members(store, layers[-3])
    assert docs["docs/guide.txt"] == ("0644", 7, COMMIT_TIME, b"guide v1\n") and "docs/README" not in docs
    src = _members(store, layers[-2])
    assert src["src/bin/run.sh"][:3] == ("0755", 0, COMMIT_TIME) and src["src/README"][3] == b"hello\n"
    assert not any(".git" in name for name in src)
    assert "kept/.git/HEAD" in _members(store, layers[-1])
    again, cached = build(dockerfile)
    assert cached == [2, 3, 4] and again == layers  # same commits: cached, without a clone
    repo.commit({"docs/guide.txt": "guide v2\n"}, "two")
    repo.publish()
    layers, cached = build(dockerfile)
    assert cached == [2]  # the tag v1 did not move; main did (steps 3 and 4 rebuild)
    assert _members(store, layers[-2])["src/docs/guide.txt"][3] == b"guide v2\n"


@pytest.mark.integration
@needs_git
@needs_root
def test_add_git_checksum_and_errors_name_the_line(repo: Repo, build: Build) -> None:
    commit = repo.head()
    build(f"FROM busybox:test\nARG C={commit[:10]}\nADD --checksum=$C {repo.daemon}#v1 /src\n")
    with pytest.raises(BuildError, match=rf"^Dockerfile:2: checksum mismatch for {repo.daemon}: expected commit 00"):
        build(f"FROM busybox:test\nADD --checksum=00 {repo.daemon} /src\n")
    with pytest.raises(BuildError, match=r"^Dockerfile:2: .*no branch, tag or commit named 'gone'"):
        build(f"FROM busybox:test\nADD {repo.http}#gone /src\n")
    with pytest.raises(BuildError, match=r"^Dockerfile:2: source can't be a URL for COPY"):
        build(f"FROM busybox:test\nCOPY {repo.http} /src\n")
