"""Credentials in docker's config.json and through credential helpers."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from lamina.errors import AuthError
from lamina.transport.credentials import (
    DOCKER_HUB_KEY,
    Credential,
    CredentialStore,
    HelperError,
    default_config_dir,
    registry_key,
)


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("registry", "key"), [
    ("docker.io", DOCKER_HUB_KEY),
    ("index.docker.io", DOCKER_HUB_KEY),
    ("registry-1.docker.io", DOCKER_HUB_KEY),
    ("https://index.docker.io/v1/", DOCKER_HUB_KEY),
    ("localhost:5000", "localhost:5000"),
    ("https://ghcr.io/v2/", "ghcr.io"),
])
def test_registry_key(registry: str, key: str) -> None:
    assert registry_key(registry) == key


def test_docker_config_env_is_respected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert default_config_dir() == tmp_path
    assert CredentialStore().path == tmp_path / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    assert default_config_dir() == Path.home() / ".docker"


def test_missing_file_means_no_credentials(tmp_path: Path) -> None:
    assert CredentialStore(tmp_path).get("ghcr.io") is None


def test_login_writes_0600_atomically_and_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"other.io": {"auth": _auth("x", "y")}}, "psFormat": "table"}))
    store = CredentialStore(tmp_path)
    store.login("docker.io", "alice", "p:ss")
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == "table"
    assert doc["auths"]["other.io"] == {"auth": _auth("x", "y")}
    assert doc["auths"][DOCKER_HUB_KEY] == {"auth": _auth("alice", "p:ss")}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left
    assert store.get("docker.io") == Credential("alice", "p:ss")
    assert store.get("index.docker.io") == Credential("alice", "p:ss")


def test_logout(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    store.login("localhost:5000", "bob", "pw")
    assert store.logout("localhost:5000") is True
    assert store.get("localhost:5000") is None
    assert store.logout("localhost:5000") is False


def test_entry_under_a_url_key_matches_its_host(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"https://reg.example:5000/v2/": {
        "auth": _auth("u", "p")}}}))
    assert CredentialStore(tmp_path).get("reg.example:5000") == Credential("u", "p")


def test_identity_token_and_plain_fields(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "a.io": {"identitytoken": "refresh-me"},
        "b.io": {"username": "u", "password": "p"},
        "c.io": {},
    }}))
    store = CredentialStore(tmp_path)
    assert store.get("a.io") == Credential(identity_token="refresh-me")
    assert store.get("b.io") == Credential("u", "p")
    assert store.get("c.io") is None


def test_malformed_auth_is_a_clear_error_without_the_secret(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"a.io": {"auth": _auth("nocolon", "")[:-4]}}}))
    with pytest.raises(AuthError, match="a.io"):
        CredentialStore(tmp_path).get("a.io")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AuthError, match="malformed JSON"):
        CredentialStore(tmp_path).get("a.io")


def test_password_never_in_repr() -> None:
    text = repr(Credential("alice", "hunter2", "tok3n"))
    assert "alice" in text and "hunter2" not in text and "tok3n" not in text


# --- credential helpers -------------------------------------------------------------

_HELPER = """#!{python}
import json, os, sys
db = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper-db.json")
data = json.load(open(db)) if os.path.exists(db) else {{}}
action = sys.argv[1]
payload = sys.stdin.read()
if payload == "broken.io":
    print("the keychain is locked"); sys.exit(3)
if action == "get":
    if payload not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps(data[payload]))
elif action == "store":
    doc = json.loads(payload); data[doc["ServerURL"]] = doc
    json.dump(data, open(db, "w"))
elif action == "erase":
    if payload not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    del data[payload]; json.dump(data, open(db, "w"))
"""


@pytest.fixture
def helper_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-fake"
    script.write_text(_HELPER.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return bindir


def test_creds_store_round_trip(tmp_path: Path, helper_dir: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.json").write_text(json.dumps({"credsStore": "fake"}))
    store = CredentialStore(conf)
    assert store.get("ghcr.io") is None
    store.login("ghcr.io", "carol", "s3cret")
    doc = json.loads((conf / "config.json").read_text())
    assert doc["auths"] == {"ghcr.io": {}}  # the secret went to the helper, not the file
    assert "s3cret" not in (conf / "config.json").read_text()
    assert store.get("ghcr.io") == Credential("carol", "s3cret")
    assert store.logout("ghcr.io") is True
    assert store.get("ghcr.io") is None


def test_cred_helpers_per_registry_and_identity_tokens(tmp_path: Path, helper_dir: Path) -> None:
    (helper_dir / "helper-db.json").write_text(json.dumps({
        "gcr.io": {"ServerURL": "gcr.io", "Username": "<token>", "Secret": "refresh"}}))
    (tmp_path / "config.json").write_text(json.dumps({
        "credHelpers": {"gcr.io": "fake"}, "auths": {"other.io": {"auth": _auth("o", "p")}}}))
    store = CredentialStore(tmp_path)
    assert store.get("gcr.io") == Credential(identity_token="refresh")
    assert store.get("other.io") == Credential("o", "p")


def test_helper_failures_are_errors_naming_the_helper(tmp_path: Path, helper_dir: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"broken.io": "fake", "gone.io": "absent"}}))
    store = CredentialStore(tmp_path)
    with pytest.raises(HelperError, match="docker-credential-fake get: the keychain is locked"):
        store.get("broken.io")
    with pytest.raises(HelperError, match="docker-credential-absent not found"):
        store.get("gone.io")


def test_helper_runner_is_a_seam(tmp_path: Path) -> None:
    calls: list[tuple[str, str, bytes]] = []

    def runner(program: str, action: str, stdin: bytes) -> bytes:
        calls.append((program, action, stdin))
        return json.dumps({"Username": "u", "Secret": "s"}).encode()

    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "mem"}))
    assert CredentialStore(tmp_path, helper_runner=runner).get("docker.io") == Credential("u", "s")
    assert calls == [("docker-credential-mem", "get", DOCKER_HUB_KEY.encode())]
