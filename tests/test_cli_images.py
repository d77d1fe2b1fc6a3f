"""The docker image workflow as a user runs it: images filters and --format, tag/rmi/inspect errors,
pull/push messages and --all-tags, --tls-verify=false and login, and sizes that agree with docker's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import cli
from helpers.dockerd import private_dockerd
from helpers.images import busybox_rootfs_tar
from helpers.registry import running_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


def lamina(root: Path, *args: str, code: int = 0, stdin: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli.lamina(root, *args, code=code, stdin=stdin, env=env)


def out(root: Path, *args: str) -> list[str]:
    return lamina(root, *args).stdout.splitlines()


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A docker client talking to a private dockerd (helpers/dockerd.py), stopped afterwards."""
    with private_dockerd(tmp_path_factory.mktemp("dockerd")) as argv:
        yield argv


@pytest.fixture
def base(tmp_path: Path) -> Path:
    store = tmp_path / "a"
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    lamina(store, "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]', str(tarball), "busybox:test")
    return store


def _build(root: Path, ctx: Path, tag: str, dockerfile: str) -> str:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return lamina(root, "build", "-q", "-t", tag, str(ctx)).stdout.strip()


def test_images_filters_and_format(base: Path, tmp_path: Path) -> None:
    lamina(base, "tag", "busybox:test", "example.com/team/bb:1")
    extra = tmp_path / "extra.tar"
    extra.write_bytes(busybox_rootfs_tar({"etc/extra": b"x\n"}))
    dangling = lamina(base, "import", str(extra)).stdout.strip()  # no name: <none>
    assert out(base, "images", "-q", "--filter", "dangling=true") == [dangling[7:19]]
    assert [line.split()[:2] for line in out(base, "images", "-f", "dangling=true")[1:]] == [["<none>", "<none>"]]
    assert out(base, "images", "--format", "{{.Repository}}:{{.Tag}}", "-f", "dangling=false") == [
        "busybox:test", "example.com/team/bb:1"]
    assert out(base, "images", "--format", "{{.Repository}}", "-f", "reference=example.com/*/*") == [
        "example.com/team/bb"]
    assert out(base, "images", "--format", "{{.Repository}}:{{.Tag}}", "busybox") == ["busybox:test"]
    assert out(base, "images", "-a", "-q") == out(base, "images", "-q")
    assert out(base, "history", "--no-human", "busybox:test")[0].split()[:4] == ["IMAGE", "CREATED", "AT", "CREATED"]
    table = out(base, "images", "--format", "table {{.ID}}\\t{{.Repository}}", "-f", "reference=busy*")
    assert table[0].split() == ["IMAGE", "ID", "REPOSITORY"] and table[1].split()[1] == "busybox"
    rows = [json.loads(line) for line in out(base, "images", "--format", "{{json .}}")]
    assert sorted(rows[0]) == ["Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository",
                               "SharedSize", "Size", "Tag", "UniqueSize", "VirtualSize"]
    assert {r["Repository"] for r in rows} == {"busybox", "example.com/team/bb", "<none>"}
    assert out(base, "images", "--format", "json", "-f", "dangling=true")[0].startswith('{"Containers":"N/A"')
    bad = lamina(base, "images", "--filter", "color=red", code=1)
    assert bad.stderr.startswith("Error: invalid filter 'color=red'")
    bad = lamina(base, "images", "--format", "{{.Nope}}", code=1)
    assert "can't evaluate field Nope" in bad.stderr


def test_tag_rmi_and_inspect_errors(base: Path) -> None:
    refused = lamina(base, "tag", "busybox:test", "app@sha256:" + "0" * 64, code=1)
    assert refused.stderr.strip() == f"Error: refusing to create a tag with a digest reference: app@sha256:{'0' * 64}"
    assert lamina(base, "tag", "nope", "x", code=1).stderr.strip() == "Error: no such image: nope"
    assert "must be lowercase" in lamina(base, "tag", "busybox:test", "BAD", code=1).stderr
    lamina(base, "tag", "busybox:test", "bb:2")
    image_id = lamina(base, "inspect", "-f", "{{.Id}}", "bb:2").stdout.strip()
    shown = lamina(base, "inspect", "-f", "{{.Config.Env}} {{json .RepoTags}} {{.Os}}", "bb:2").stdout
    assert shown == '[PATH=/bin] ["bb:2","busybox:test"] linux\n'
    partial = lamina(base, "inspect", "-f", "{{.Id}}", "bb:2", "nope", code=1)
    assert partial.stdout == image_id + "\n" and partial.stderr.strip() == "Error: no such image: nope"
    assert lamina(base, "inspect", "-f", "Id", "bb:2").stdout.strip() == image_id  # the older shorthand
    # by ID with two tags: refused without -f; the other names are still handled, exit 1
    refused = lamina(base, "rmi", image_id[7:19], "nope", code=1)
    assert "must be forced" in refused.stderr and "Error: no such image: nope" in refused.stderr
    removed = lamina(base, "rmi", "nope", "bb:2", code=1)
    assert removed.stdout == "Untagged: bb:2\n" and removed.stderr.strip() == "Error: no such image: nope"
    lamina(base, "tag", "busybox:test", "bb:3")
    forced = lamina(base, "rmi", "-f", image_id).stdout.splitlines()
    assert sorted(forced[:2]) == ["Untagged: bb:3", "Untagged: busybox:test"] and forced[2] == f"Deleted: {image_id}"
    assert out(base, "images", "-q") == []


def test_pull_and_push_messages_and_all_tags(base: Path, tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry") as reg:
        repo = f"{reg.host}/team/app"
        _build(base, tmp_path / "ctx", f"{repo}:1", "FROM busybox:test\nRUN echo one > /one\n")
        lamina(base, "tag", f"{repo}:1", f"{repo}:2")
        pushed = out(base, "push", "--all-tags", repo)
        assert pushed[0] == f"The push refers to repository [{repo}]"
        assert [line.split(":")[0] for line in pushed if ": digest: sha256:" in line] == ["1", "2"]
        assert out(base, "push", "-q", f"{repo}:1") == [f"{repo}:1"]
        assert "tag can't be used" in lamina(base, "push", "-a", f"{repo}:1", code=2).stderr
        fresh = tmp_path / "fresh"
        first = out(fresh, "pull", f"{repo}:1")
        assert first[0] == f"1: Pulling from {repo}"
        assert first[-2:] == [f"Status: Downloaded newer image for {repo}:1", f"{repo}:1"]
        again = out(fresh, "pull", f"{repo}:1")
        assert again[-2:] == [f"Status: Image is up to date for {repo}:1", f"{repo}:1"]
        assert out(fresh, "pull", "-q", f"{repo}:1") == [f"{repo}:1"]
        # the tag moves in the registry: nothing new to download but the tag, still "newer"
        _build(base, tmp_path / "ctx2", f"{repo}:1", "FROM busybox:test\nRUN echo two > /two\n")
        lamina(base, "push", "-q", f"{repo}:1")
        assert out(fresh, "pull", f"{repo}:1")[-2] == f"Status: Downloaded newer image for {repo}:1"
        everything = out(fresh, "pull", "--all-tags", repo)
        assert everything[-2:] == [f"Status: Downloaded newer image for {repo}", repo]
        assert sorted(out(fresh, "images", "--format", "{{.Tag}}")) == ["1", "2"]
        assert out(fresh, "pull", "-a", repo)[-2] == f"Status: Image is up to date for {repo}"


def test_tls_verify_false_and_login(base: Path, tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path / "docker-config")}
    with running_registry(tmp_path / "tls", users={"alice": "s3cret"}) as reg:
        wrong = lamina(base, "login", "-u", "alice", "--password-stdin", "--tls-verify=false", reg.host,
                       stdin="nope\n", env=env, code=1)
        assert "unauthorized" in wrong.stderr and "s3cret" not in wrong.stderr
        assert not (tmp_path / "docker-config" / "config.json").exists()  # nothing stored
        ok = lamina(base, "login", "-u", "alice", "--password-stdin", "--tls-verify=false", reg.host,
                    stdin="s3cret\n", env=env)
        assert ok.stdout == "Login Succeeded\n"
        assert reg.host in json.loads((tmp_path / "docker-config" / "config.json").read_text())["auths"]
        name = f"{reg.host}/secure/bb:1"
        lamina(base, "tag", "busybox:test", name)
        lamina(base, "push", "--tls-verify=false", name, env=env)  # HTTPS, self-signed CA not checked
        fresh = tmp_path / "fresh"
        pulled = lamina(fresh, "pull", "--tls-verify=false", name, env=env).stdout.splitlines()
        assert pulled[-2] == f"Status: Downloaded newer image for {name}"
    with running_registry(tmp_path / "plain") as reg:  # plain HTTP: --tls-verify=false falls back to it
        name = f"{reg.host}/plain/bb:1"
        lamina(base, "tag", "busybox:test", name)
        lamina(base, "push", "-q", "--tls-verify=false", name)
        assert lamina(tmp_path / "fresh2", "pull", "-q", "--tls-verify=false", name).stdout == f"{name}\n"


def _sizes(root: Path, name: str) -> tuple[str, list[str], str]:
    """lamina's image Size (bytes), history sizes (bytes) and images SIZE for ``name``."""
    inspect = lamina(root, "inspect", "-f", "{{.Size}}", name).stdout.strip()
    history = out(root, "history", "--no-human", "--format", "{{.Size}}", name)
    listed = out(root, "images", "--format", "{{.Size}}", "-f", f"reference={name}")
    return inspect, history, listed[0]


def _docker_sizes(docker_argv: list[str], name: str) -> tuple[str, list[str], str]:
    def run(*args: str) -> str:
        proc = subprocess.run([*docker_argv, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    return (run("image", "inspect", "-f", "{{.Size}}", name).strip(),
            run("history", "--human=false", "--format", "{{.Size}}", name).splitlines(),
            run("images", "--format", "{{.Size}}", name).splitlines()[0])


def test_sizes_agree_with_docker(docker: list[str], base: Path, tmp_path: Path) -> None:
    """Built, pushed+pulled, saved+loaded: lamina's sizes are docker's (files' bytes, symlink targets)."""
    name = "lamina-sizes:1"
    _build(base, tmp_path / "ctx", name,
           "FROM busybox:test\n"
           "RUN echo hello > /a && ln -s /a/some/long/target /l && ln /a /h && mkdir -p /d/e"
           " && dd if=/dev/zero of=/z bs=1000 count=300 2>/dev/null\n"
           "RUN rm /bin/ls && echo x > /y\nENV A=1\n")
    built = _sizes(base, name)
    archive = tmp_path / "img.tar"
    lamina(base, "save", "-o", str(archive), name)
    subprocess.run([*docker, "load", "-i", str(archive)], check=True, capture_output=True, timeout=120)
    assert built == _docker_sizes(docker, name)
    assert int(built[0]) > 2_000_000  # uncompressed: busybox alone is bigger than its gzip blob
    with running_registry(tmp_path / "registry") as reg:  # a pulled image: sizes counted while downloading
        remote = f"{reg.host}/sizes/img:1"
        lamina(base, "tag", name, remote)
        lamina(base, "push", "-q", remote)
        fresh = tmp_path / "fresh"
        lamina(fresh, "pull", "-q", remote)
        assert _sizes(fresh, remote) == built
        subprocess.run([*docker, "pull", "-q", remote], check=True, capture_output=True, timeout=120)
        assert _docker_sizes(docker, remote) == built
    back = tmp_path / "from-docker.tar"  # a loaded image: sizes counted while ingesting
    subprocess.run([*docker, "save", "-o", str(back), name], check=True, capture_output=True, timeout=120)
    loaded = tmp_path / "loaded"
    lamina(loaded, "load", "-i", str(back))
    assert _sizes(loaded, name) == built
