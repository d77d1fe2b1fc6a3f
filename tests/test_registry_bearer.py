"""lamina against the real registry (distribution 2.8) behind a Bearer token service.

The registry runs with ``auth: token`` and trusts the JWTs of
:class:`helpers.tokenserver.TokenServer`, which grants per a small policy:
alice pushes and pulls ``team/*``, ``public/*`` and ``private/*``; bob pulls
``team/*`` and pushes ``bob/*``; anyone pulls ``public/*``. The token server
records every token request and the registry logs every request it served,
so the tests count tokens per scope set and blob uploads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import cli
from helpers.images import busybox_rootfs_tar
from helpers.registry import RunningRegistry, access_log, make_image, running_registry
from helpers.tokenserver import DEFAULT_GRANTS, TokenServer
from lamina.errors import AuthError
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage
from lamina.transport.credentials import CredentialStore
from lamina.transport.registry.client import RegistryClient
from lamina.transport.registry.pull import pull
from lamina.transport.registry.push import push

pytestmark = pytest.mark.integration

GRANTS = (*DEFAULT_GRANTS, ("alice", "private/*", ("pull", "push")), ("bob", "bob/*", ("pull", "push")))
ALICE, BOB = ("alice", "wonder-land"), ("bob", "builder")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TokenServer, RunningRegistry]]:
    workdir = tmp_path_factory.mktemp("bearer")
    server = TokenServer(workdir / "tokens", grants=GRANTS)
    try:
        with running_registry(workdir / "registry", token=server) as reg:
            yield server, reg
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def server(tokens: tuple[TokenServer, RunningRegistry]) -> Iterator[TokenServer]:
    """The token server, its request log cleared and its settings restored after the test."""
    ts = tokens[0]
    ts.clear()
    yield ts
    ts.forbid_status, ts.expires_in, ts.short_lived_next = None, 300, 0


@pytest.fixture
def reg(tokens: tuple[TokenServer, RunningRegistry]) -> RunningRegistry:
    return tokens[1]


def lamina(root: Path, *args: str, user: tuple[str, str] | None = None, config: Path, stdin: str | None = None,
           code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``config`` as DOCKER_CONFIG; the exit code must be ``code``."""
    env = {"DOCKER_CONFIG": str(config), "PYTHONPATH": os.pathsep.join(sys.path)}
    return cli.lamina(root, *args, stdin=stdin, code=code, env=env)


def login(root: Path, config: Path, host: str, user: tuple[str, str]) -> None:
    out = lamina(root, "login", "-u", user[0], "--password-stdin", host, stdin=user[1] + "\n", config=config)
    assert out.stdout == "Login Succeeded\n"


def served(reg: RunningRegistry, mark: int) -> list[tuple[str, str, int]]:
    """The registry's requests after the first ``mark`` (its access log is written as responses end)."""
    seen = -1
    for _ in range(40):
        log = access_log(reg)
        if len(log) == seen:
            break
        seen = len(log)
        time.sleep(0.05)
    return log[mark:]


def uploads(requests: list[tuple[str, str, int]]) -> list[str]:
    """The paths of blob uploads started (a mount is a POST with ``mount=``, not an upload)."""
    return [p for m, p, s in requests if m == "POST" and "/blobs/uploads/" in p and "mount=" not in p and s == 202]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("base")
    tarball = store.parent / f"{store.name}-rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    lamina(store / "root", "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["/bin/sh"]', str(tarball), "busybox:test",
           config=store / "no-docker-config")
    return store / "root"


# --- the CLI, as a user runs it ---------------------------------------------------------


def test_login_push_pull_push_again(base: Path, tmp_path: Path, server: TokenServer, reg: RunningRegistry) -> None:
    config = tmp_path / "docker"
    wrong = lamina(base, "login", "-u", "alice", "--password-stdin", reg.host, stdin="nope\n", config=config, code=1)
    assert wrong.stderr.count("\n") == 1 and "refused our credentials" in wrong.stderr and "nope" not in wrong.stderr
    assert not (config / "config.json").exists()
    login(base, config, reg.host, ALICE)
    assert [(r.account, r.scopes, r.status) for r in server.requests] == [(None, (), 401), ("alice", (), 200)]

    name = f"{reg.host}/team/app:v1"
    lamina(base, "tag", "busybox:test", name, config=config)
    server.clear()
    mark = len(served(reg, 0))
    out = lamina(base, "push", name, config=config).stdout.splitlines()
    assert out[0] == f"The push refers to repository [{reg.host}/team/app]"
    assert any(line.endswith(": Pushed") for line in out) and out[-1].startswith("v1: digest: sha256:")
    first = served(reg, mark)
    assert len(uploads(first)) == 2  # the layer and the config
    assert [(r.account, r.scopes) for r in server.issued()] == [("alice", ("repository:team/app:pull,push",))]

    server.clear()
    mark = len(served(reg, 0))
    again = lamina(base, "push", name, config=config).stdout.splitlines()
    assert any(line.endswith(": Layer already exists") for line in again) and again[-1] == out[-1]
    assert uploads(served(reg, mark)) == [] and not [p for m, p, _ in served(reg, mark) if m in ("PATCH", "PUT")
                                                     and "/blobs/" in p]
    assert len(server.issued()) == 1

    server.clear()
    fresh = tmp_path / "fresh"
    pulled = lamina(fresh, "pull", name, config=config).stdout.splitlines()
    assert pulled[-2] == f"Status: Downloaded newer image for {name}"
    assert [(r.account, r.scopes) for r in server.issued()] == [("alice", ("repository:team/app:pull",))]
    inspect = lamina(fresh, "inspect", "-f", "{{.Id}}", name, config=config).stdout
    assert inspect == lamina(base, "inspect", "-f", "{{.Id}}", name, config=config).stdout
    if shutil.which("skopeo"):  # an independent client through the same token service
        proc = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", ":".join(ALICE),
                               f"docker://{name}"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and out[-1].split()[2] in proc.stdout, proc.stderr


def test_cross_repository_mount_asks_for_pull_on_the_source(base: Path, tmp_path: Path, server: TokenServer,
                                                          reg: RunningRegistry) -> None:
    config = tmp_path / "docker"
    login(base, config, reg.host, ALICE)
    first, second = f"{reg.host}/team/mount-a:v1", f"{reg.host}/team/mount-b:v1"
    for name in (first, second):
        lamina(base, "tag", "busybox:test", name, config=config)
    lamina(base, "push", "-q", first, config=config)
    server.clear()
    mark = len(served(reg, 0))
    out = lamina(base, "push", second, config=config).stdout
    assert "Mounted from" in out and ": Pushed" not in out
    requests = served(reg, mark)
    assert uploads(requests) == []
    mounts = [p for m, p, s in requests if m == "POST" and "mount=" in p and s == 201]
    sources = {p.partition("from=")[2].replace("%2F", "/") for p in mounts}
    assert len(mounts) == 2 and len(sources) == 1  # from team/mount-a, or an earlier test's repository
    scope_sets = [frozenset(r.scopes) for r in server.issued()]
    assert frozenset({"repository:team/mount-b:pull,push", f"repository:{sources.pop()}:pull"}) in scope_sets
    assert len(scope_sets) == len(set(scope_sets)) == 2  # one token per scope set, not per request


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")
def test_build_from_an_image_behind_the_token_service(base: Path, tmp_path: Path, server: TokenServer,
                                                     reg: RunningRegistry) -> None:
    config = tmp_path / "docker"
    login(base, config, reg.host, ALICE)
    name = f"{reg.host}/team/from:v1"
    lamina(base, "tag", "busybox:test", name, config=config)
    lamina(base, "push", "-q", name, config=config)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {name}\nRUN echo built > /msg\n")
    other = tmp_path / "other"
    server.clear()
    lamina(other, "build", "-t", "child", str(ctx), config=config)  # FROM pulls the base with alice's token
    assert lamina(other, "run", "--rm", "child", "cat", "/msg", config=config).stdout == "built\n"
    assert ("alice", ("repository:team/from:pull",)) in [(r.account, r.scopes) for r in server.issued()]


def test_denied_push_is_one_line(base: Path, tmp_path: Path, server: TokenServer, reg: RunningRegistry) -> None:
    config = tmp_path / "docker"
    login(base, config, reg.host, BOB)
    name = f"{reg.host}/team/bobs:v1"  # bob may pull team/*, not push
    lamina(base, "tag", "busybox:test", name, config=config)
    server.clear()
    denied = lamina(base, "push", name, config=config, code=1).stderr
    assert denied.count("\n") == 1 and denied.startswith(f"Error: pushing {name}: ")
    assert "denied: requested access to the resource is denied (repository:team/bobs:pull,push not granted)" in denied
    scope_sets = [frozenset(r.scopes) for r in server.issued()]
    assert len(scope_sets) == len(set(scope_sets))  # a refusal is not answered by asking again

    server.forbid_status = 403  # a token service that refuses what it cannot grant whole
    server.clear()
    refused = lamina(base, "push", name, config=config, code=1).stderr
    assert refused.count("\n") == 1
    assert "the token server denied access to repository:team/bobs:pull,push (403)" in refused
    # one token request per scope set: the push's, and the mount's (push here, pull on an earlier
    # test's repository) when those blobs were pushed from this store before
    assert {r.status for r in server.requests} == {403}
    scope_sets = [frozenset(r.scopes) for r in server.requests]
    assert len(scope_sets) == len(set(scope_sets)) <= 2
    assert frozenset({"repository:team/bobs:pull,push"}) in scope_sets


def test_anonymous_pull_of_a_public_repository(base: Path, tmp_path: Path, server: TokenServer,
                                               reg: RunningRegistry) -> None:
    alice = tmp_path / "alice"
    login(base, alice, reg.host, ALICE)
    name = f"{reg.host}/public/bb:1"
    lamina(base, "tag", "busybox:test", name, config=alice)
    lamina(base, "push", "-q", name, config=alice)
    nobody = tmp_path / "nobody"  # no credentials at all
    server.clear()
    assert lamina(tmp_path / "anon", "pull", "-q", name, config=nobody).stdout == f"{name}\n"
    assert [(r.account, r.scopes) for r in server.issued()] == [(None, ("repository:public/bb:pull",))]
    listed = lamina(tmp_path / "anon", "pull", "-a", f"{reg.host}/public/bb", config=nobody).stdout.splitlines()
    assert listed[-2] == f"Status: Image is up to date for {reg.host}/public/bb"
    private = lamina(tmp_path / "anon", "pull", f"{reg.host}/team/app:v1", config=nobody, code=1).stderr
    assert private.count("\n") == 1
    assert "denied: requested access to the resource is denied (repository:team/app:pull not granted)" in private


# --- one client, many requests: token reuse and renewal -----------------------------------


@pytest.fixture
def alice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reg: RunningRegistry) -> RegistryClient:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    CredentialStore().login(reg.host, *ALICE)
    return RegistryClient(reg.host, credentials=CredentialStore(), backoff=0.01)


@pytest.fixture
def image(tmp_path: Path) -> tuple[Store, StoredImage]:
    store = Store(tmp_path / "source")
    return store, make_image(store, {"a": b"1"}, {"b": os.urandom(50_000)}, {"c": b"3"})


def test_one_token_per_scope_set(tmp_path: Path, server: TokenServer, reg: RunningRegistry,
                                 alice: RegistryClient, image: tuple[Store, StoredImage]) -> None:
    store, stored = image
    ref = Reference.parse(f"{reg.host}/team/reuse:v1")
    mark = len(served(reg, 0))
    with alice:
        push(store, stored, ref, client=alice, chunk_size=16 << 10)  # the 50 kB layer goes in PATCH chunks
        for i in range(3):
            assert pull(Store(tmp_path / f"dest{i}"), ref, client=alice).manifest_digest == stored.manifest_digest
    assert [r.scopes for r in server.issued()] == [("repository:team/reuse:pull,push",),
                                                   ("repository:team/reuse:pull",)]
    requests = served(reg, mark)
    assert len(requests) > 20 and any(method == "PATCH" for method, _, _ in requests)
    refused = [r for r in requests if r[2] == 401]
    assert 1 <= len(refused) <= 4  # only the first, parallel requests before the challenge was known


def test_token_expiring_early_is_renewed(tmp_path: Path, server: TokenServer, reg: RunningRegistry,
                                         alice: RegistryClient, image: tuple[Store, StoredImage]) -> None:
    store, stored = image
    ref = Reference.parse(f"{reg.host}/team/renew:v1")
    with alice:
        push(store, stored, ref, client=alice)
        server.short_lived_next = 1  # the pull's token dies at the registry in 2 s; expires_in says 300
        pull(Store(tmp_path / "one"), ref, client=alice)
        time.sleep(3.2)
        mark = len(served(reg, 0))
        assert pull(Store(tmp_path / "two"), ref, client=alice).manifest_digest == stored.manifest_digest
    assert [r.scopes for r in server.issued()][1:] == [("repository:team/renew:pull",)] * 2
    assert [s for _, _, s in served(reg, mark)].count(401) == 1  # refused once, then the new token


def test_token_is_renewed_before_expires_in_runs_out(tmp_path: Path, server: TokenServer, reg: RunningRegistry,
                                                     alice: RegistryClient,
                                                     image: tuple[Store, StoredImage]) -> None:
    store, stored = image
    ref = Reference.parse(f"{reg.host}/team/expiry:v1")
    server.expires_in = 1
    with alice:
        push(store, stored, ref, client=alice)
        pull(Store(tmp_path / "one"), ref, client=alice)
        time.sleep(1.1)
        mark = len(served(reg, 0))
        pull(Store(tmp_path / "two"), ref, client=alice)
    assert [r.scopes for r in server.issued()][1:] == [("repository:team/expiry:pull",)] * 2
    assert 401 not in [s for _, _, s in served(reg, mark)]  # renewed before the registry could refuse it


def test_refused_mount_source_falls_back_to_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   server: TokenServer, reg: RunningRegistry) -> None:
    """bob may not read private/*: the mount fails (a token without it, or a 403) and the blobs go up."""
    store = Store(tmp_path / "source")
    for forbid, repo in ((None, "bob/spec"), (403, "bob/strict")):
        stored = make_image(store, {"a": os.urandom(1000)}, {"b": os.urandom(1000)}, {"c": os.urandom(1000)})
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "alice"))
        CredentialStore().login(reg.host, *ALICE)
        with RegistryClient(reg.host, credentials=CredentialStore(), backoff=0.01) as client:
            push(store, stored, Reference.parse(f"{reg.host}/private/{repo.replace('/', '-')}:v1"), client=client)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "bob"))
        CredentialStore().login(reg.host, *BOB)
        server.forbid_status = forbid
        server.clear()
        mark = len(served(reg, 0))
        ref = Reference.parse(f"{reg.host}/{repo}:v1")
        with RegistryClient(reg.host, credentials=CredentialStore(), backoff=0.01) as bob:
            assert push(store, stored, ref, client=bob).digest == stored.manifest_digest
        assert len(uploads(served(reg, mark))) == 4  # three layers and the config, uploaded
        scope_sets = [frozenset(r.scopes) for r in server.requests]
        assert len(scope_sets) == len(set(scope_sets)) == 2, scope_sets  # the refusal is not asked again


def test_wrong_password_is_refused_by_the_token_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       server: TokenServer, reg: RunningRegistry) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    CredentialStore().login(reg.host, "alice", "not-it")
    with RegistryClient(reg.host, credentials=CredentialStore(), backoff=0.01) as client, \
            pytest.raises(AuthError, match="refused our credentials") as info:
        pull(Store(tmp_path / "dest"), Reference.parse(f"{reg.host}/team/app:v1"), client=client)
    assert info.value.status == 401 and "not-it" not in str(info.value)
    assert [r.status for r in server.requests] == [401]
