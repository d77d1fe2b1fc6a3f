"""Registry mirrors and insecure registries from config files; a local registry acting as a Hub mirror."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import cli
from helpers.images import busybox_rootfs_tar
from helpers.registry import free_port, running_registry
from lamina.errors import RegistryError
from lamina.transport import mirrors
from lamina.transport.mirrors import Mirror, RegistryConfig, load, parse_config, parse_mirror


@pytest.mark.parametrize(("url", "want"), [
    ("https://mirror.gcr.io", Mirror("mirror.gcr.io", False)),
    ("http://127.0.0.1:5000/", Mirror("127.0.0.1:5000", True)),
    ("mirror.lan:8443", Mirror("mirror.lan:8443", False)),
])
def test_parse_mirror(url: str, want: Mirror) -> None:
    assert parse_mirror(url) == want


@pytest.mark.parametrize("url", ["ftp://m", "https://m/v2/library", "https://", "http://m?x=1"])
def test_parse_mirror_rejects(url: str) -> None:
    with pytest.raises(RegistryError, match="invalid registry mirror"):
        parse_mirror(url)


def test_mirrors_apply_to_docker_hub_only() -> None:
    config = parse_config({"registry-mirrors": ["https://m1", "http://m2:5000"], "debug": True})
    assert config.mirrors_for("docker.io") == (Mirror("m1", False), Mirror("m2:5000", True))
    assert config.mirrors_for("index.docker.io") == config.mirrors
    assert config.mirrors_for("quay.io") == ()


@pytest.mark.parametrize(("domain", "insecure"), [
    ("reg.lan:5000", True), ("reg.lan:5001", False), ("plain.lan:80", True), ("plain.lan", True),
    ("10.1.2.3:5000", True), ("11.0.0.1", False), ("[fd00::1]:5000", True), ("secure.example", False)])
def test_insecure_registries(domain: str, insecure: bool) -> None:
    config = RegistryConfig(insecure=("reg.lan:5000", "plain.lan", "10.0.0.0/8", "fd00::/8"))
    assert config.is_insecure(domain) is insecure


def test_registry_client_speaks_plain_http_to_insecure_registries() -> None:
    config = RegistryConfig(insecure=("reg.lan:5000",))
    with mirrors.registry_client("reg.lan:5000", config) as client:
        assert str(client.base_url) == "http://reg.lan:5000"
    with mirrors.registry_client("other.lan:5000", config) as client:
        assert str(client.base_url) == "https://other.lan:5000"
    with mirrors.registry_client("127.0.0.1:5000", config) as client:  # loopback: always plain
        assert str(client.base_url) == "http://127.0.0.1:5000"


def test_load_merges_files_in_order(tmp_path: Path) -> None:
    own = tmp_path / "registries.toml"
    own.write_text('registry-mirrors = ["http://127.0.0.1:5000"]\ninsecure-registries = ["a:1"]\n')
    daemon = tmp_path / "daemon.json"
    daemon.write_text(json.dumps({"registry-mirrors": ["https://hub.mirror", "http://127.0.0.1:5000"],
                                  "insecure-registries": ["b:2"], "log-level": "warn"}))
    config = load([own, tmp_path / "missing.json", daemon])
    assert config.mirrors == (Mirror("127.0.0.1:5000", True), Mirror("hub.mirror", False))
    assert config.insecure == ("a:1", "b:2")
    assert load([tmp_path / "none"]) == RegistryConfig()


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.json", "{", "bad.json"), ("bad.toml", "registry-mirrors = [", "bad.toml"),
    ("list.json", "[]", "an object"), ("type.json", '{"registry-mirrors": "http://m"}', "list of strings")])
def test_malformed_files_are_errors_naming_them(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(RegistryError, match=message):
        load([tmp_path / name])


def test_config_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAMINA_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert mirrors.config_paths() == [tmp_path / "lamina" / "registries.toml", tmp_path / "lamina" / "registries.json",
                                      Path("/etc/docker/daemon.json")]
    monkeypatch.setenv("LAMINA_CONFIG", str(tmp_path / "mine.json"))
    assert mirrors.config_paths() == [tmp_path / "mine.json", Path("/etc/docker/daemon.json")]


# --- a local registry as the Docker Hub mirror ----------------------------------------------

def _lamina(root: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cli.lamina(root, *args, check=check, environ=env)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")
def test_a_mirror_serves_docker_hub_pulls_and_from(tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry") as reg:
        config = tmp_path / "registries.json"
        dead = f"http://127.0.0.1:{free_port()}"  # tried first, skipped: nothing listens there
        config.write_text(json.dumps({"registry-mirrors": [dead, f"http://{reg.host}"]}))
        # Docker Hub itself must never be reached from a test: send any such request to a dead proxy
        env = {**os.environ, "LAMINA_CONFIG": str(config), "HTTPS_PROXY": "http://127.0.0.1:9",
               "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"}
        seed = tmp_path / "seed"
        tarball = tmp_path / "rootfs.tar"
        tarball.write_bytes(busybox_rootfs_tar())
        _lamina(seed, env, "import", "-c", "ENV PATH=/bin", str(tarball), f"{reg.host}/library/busybox:latest")
        _lamina(seed, env, "push", f"{reg.host}/library/busybox:latest")

        fresh = tmp_path / "fresh"
        _lamina(fresh, env, "pull", "busybox")
        assert _lamina(fresh, env, "images").stdout.splitlines()[1].split()[:2] == ["busybox", "latest"]
        digests = json.loads(_lamina(fresh, env, "inspect", "busybox").stdout)[0]["RepoDigests"]
        assert len(digests) == 1 and digests[0].startswith("busybox@sha256:")

        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo via-mirror > /m\n")
        builder = tmp_path / "builder"
        _lamina(builder, env, "build", "-t", "app", str(ctx))  # FROM busybox pulls through the mirror
        assert _lamina(builder, env, "run", "--rm", "app", "cat", "/m").stdout == "via-mirror\n"

        # a tag no mirror has falls back to Docker Hub itself: here the dead proxy, so an error naming it
        missing = _lamina(fresh, env, "pull", "nothing-here:1", check=False)
        assert missing.returncode == 1 and "docker.io" in missing.stderr and "Traceback" not in missing.stderr
